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


def _noise_sigma(d: np.ndarray, dark: np.ndarray) -> float:
    sel = np.abs(d[::4, ::4])[dark[::4, ::4] > 0.5]
    return float(np.median(sel)) / 0.6745 if sel.size else 0.0


def _lift(base: np.ndarray, alpha: float, black: float = 0.05) -> np.ndarray:
    if alpha <= 0:
        return base
    x = np.clip(base, 1e-6, 1)
    lifted = x ** (2.0 ** (2 * alpha * (x - 0.5)))
    t = np.clip((base - black) / black, 0, 1)
    return base + t * t * (3 - 2 * t) * (lifted - base)


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
    for k, (di, dv) in enumerate(zip(li[:-1], lv[:-1])):
        L, G = maps(di.shape)
        dv = dv * (1 - cfg.glare_suppression * G)
        box = np.full(3, 1 / 3)
        ei, ev = _sep(di * di, box), _sep(dv * dv, box)
        if k == 0 and cfg.detail_noise > 0:
            dark = _smoothstep(L, cfg.dark_level, cfg.bright_level)
            noise = (cfg.detail_noise * _noise_sigma(dv, dark)) ** 2 * dark
            dv = dv * ev / (ev + noise + 1e-12)
        w = ei**2 / (ei**2 + ev**2 + 1e-12)
        out.append(cfg.detail_gain * (w * di + (1 - w) * dv))
    L, G = maps(li[-1].shape)
    s = _smoothstep(L, cfg.dark_level, cfg.bright_level)
    wb = cfg.ir_weight_bright + (cfg.ir_weight_dark - cfg.ir_weight_bright) * s
    base = lv[-1] + wb * np.maximum(li[-1] - lv[-1], 0)
    base = base + cfg.glare_suppression * G * (li[-1] - base)
    out.append(_lift(base, cfg.light_normalization))
    img = out[-1]
    for d in reversed(out[:-1]):
        img = d + _up(img, d.shape)
    return np.clip(img, 0, 1)
