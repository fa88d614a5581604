"""A numpy/OpenCV re-implementation of the ``adaptive`` fusion, used only to check the torch one.

It follows the algorithm as documented in ``ivfusion_ros/fusion/adaptive.py`` with independent primitives
(``cv2.sepFilter2D`` with ``BORDER_REFLECT_101``, ``cv2.resize``), so a disagreement points at a bug in one
of the two, not at shared code.
"""

from __future__ import annotations

import cv2
import numpy as np

BURT = np.array([1, 4, 6, 4, 1], np.float64) / 16


def _sep(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    return cv2.sepFilter2D(x, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT_101)


def _down(x: np.ndarray) -> np.ndarray:
    return _sep(x, BURT)[::2, ::2]


def _up(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    up = np.zeros((2 * x.shape[0], 2 * x.shape[1]))
    up[::2, ::2] = x
    return _sep(up, 2 * BURT)[: shape[0], : shape[1]]


def _levels(h: int, w: int, wanted: int) -> int:
    n = 0
    while n < wanted and min(h, w) >= 8:
        h, w, n = (h + 1) // 2, (w + 1) // 2, n + 1
    return n


def _lap(x: np.ndarray, n: int) -> list[np.ndarray]:
    g = [x]
    for _ in range(n):
        g.append(_down(g[-1]))
    return [a - _up(b, a.shape) for a, b in zip(g[:-1], g[1:])] + [g[-1]]


def _smoothstep(illum: np.ndarray, dark: float, bright: float) -> np.ndarray:
    s = np.clip((bright - illum) / (bright - dark), 0, 1)
    return s * s * (3 - 2 * s)


def adaptive_reference(ir: np.ndarray, vis_y: np.ndarray, illum: np.ndarray, glare: np.ndarray,
                       cfg) -> np.ndarray:
    """ir, vis_y: (H, W) float in [0, 1]; illum, glare: low-resolution maps; cfg: FusionConfig."""
    ir, vis_y = ir.astype(np.float64), vis_y.astype(np.float64)
    n = _levels(*ir.shape, cfg.levels)
    li, lv = _lap(ir, n), _lap(vis_y, n)

    def maps(shape):
        size = (shape[1], shape[0])
        return (cv2.resize(illum.astype(np.float64), size, interpolation=cv2.INTER_LINEAR),
                cv2.resize(glare.astype(np.float64), size, interpolation=cv2.INTER_LINEAR))

    out = []
    for di, dv in zip(li[:-1], lv[:-1]):
        L, G = maps(di.shape)
        a = 1 - 0.8 * _smoothstep(L, cfg.dark_level, cfg.bright_level)
        dv = dv * (1 - cfg.glare_suppression * G) * a
        box = np.full(5, 1 / 5)
        ei, ev = _sep(di * di, box), _sep(dv * dv, box)
        w = ei / (ei + ev + 1e-6)
        out.append(cfg.detail_gain * (w * di + (1 - w) * dv))
    L, G = maps(li[-1].shape)
    s = _smoothstep(L, cfg.dark_level, cfg.bright_level)
    wb = cfg.ir_weight_bright + (cfg.ir_weight_dark - cfg.ir_weight_bright) * s
    wb = wb + (1 - wb) * cfg.glare_suppression * G
    base = wb * li[-1] + (1 - wb) * lv[-1]
    if cfg.light_normalization > 0:
        x = np.clip(base, 1e-6, 1)
        base = x ** (2.0 ** (2 * cfg.light_normalization * (x - 0.5)))
    out.append(base)
    img = out[-1]
    for d in reversed(out[:-1]):
        img = d + _up(img, d.shape)
    return np.clip(img, 0, 1)
