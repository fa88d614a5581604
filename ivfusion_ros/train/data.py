"""Training pairs: thermal and visible luminance in [0, 1], read once and cropped at random per step.

The folders are the evaluation layout (``<set>/ir/NAME``, ``<set>/vi/NAME``, found by
:func:`~ivfusion_ros.eval.dataset.open_datasets`), and the images go through the same decoding as inference:
thermal via :class:`~ivfusion_ros.core.frames.ThermalNormalizer` (8 bit scaled, 16 bit/float with the
percentile AGC), visible as BT.601 luminance. A network trained on other intensities than it sees at run
time would learn the wrong brightness. The development sets are a few dozen pairs, so everything is held in
memory as float32 and sampling costs nothing next to a training step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from ivfusion_ros.config import ThermalConfig
from ivfusion_ros.core.frames import ThermalNormalizer
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.eval.dataset import open_datasets
from ivfusion_ros.io.images import read_thermal, read_visible

__all__ = ["Pair", "PairSet", "load_pairs"]

_BT601 = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class Pair:
    """One pair, decoded: ``ir`` and ``vis`` ``(H, W)`` float32 in [0, 1], same size."""

    name: str
    ir: np.ndarray
    vis: np.ndarray


@dataclass
class PairSet:
    """The pairs of one or several data sets and where they came from (for the weights' metadata)."""

    pairs: list[Pair]
    sources: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, rng: np.random.Generator, batch: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` random ``crop x crop`` windows (random pair, position, horizontal and vertical flip).

        Returns ``(ir, vis)``, each ``(batch, 1, crop, crop)`` float32 in [0, 1] on the CPU.
        """
        ir = np.empty((batch, 1, crop, crop), np.float32)
        vis = np.empty_like(ir)
        for b in range(batch):
            p = self.pairs[int(rng.integers(len(self.pairs)))]
            h, w = p.ir.shape
            y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            a, v = p.ir[y:y + crop, x:x + crop], p.vis[y:y + crop, x:x + crop]
            if rng.random() < 0.5:
                a, v = a[:, ::-1], v[:, ::-1]
            if rng.random() < 0.5:
                a, v = a[::-1], v[::-1]
            ir[b, 0], vis[b, 0] = a, v
        return torch.from_numpy(ir), torch.from_numpy(vis)


def _decode(ir_raw: np.ndarray, vis_rgb: np.ndarray, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    # a fresh normaliser per image: no AGC smoothing across unrelated pairs
    norm = ThermalNormalizer(replace(ThermalConfig(), agc_smoothing=0.0))
    ir = norm(ir_raw, {np.dtype(np.uint8): "mono8", np.dtype(np.uint16): "mono16"}.get(ir_raw.dtype, "32FC1"))
    vis = (vis_rgb.astype(np.float32) / 255.0) @ _BT601
    h, w = vis.shape
    if ir.shape != vis.shape:  # the pipeline's identity registration resizes thermal onto the visible grid
        ir = cv2.resize(ir, (w, h), interpolation=cv2.INTER_LINEAR)
    if min(h, w) < min_side:  # smaller than a crop: upscale so every pair can give a full window
        s = min_side / min(h, w)
        size = (max(min_side, round(w * s)), max(min_side, round(h * s)))
        ir = cv2.resize(ir, size, interpolation=cv2.INTER_LINEAR)
        vis = cv2.resize(vis, size, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(ir, np.float32), np.ascontiguousarray(vis, np.float32)


def load_pairs(paths: str | Sequence[str | Path], min_side: int = 0, limit: int | None = None) -> PairSet:
    """Read every pair of the data set folders ``paths`` (``"a,b"`` or a list).

    Args:
        paths: data set folders with ``ir/`` and ``vi/`` (names as in :mod:`ivfusion_ros.eval.dataset`).
        min_side: pairs smaller than this are upscaled to it (the training crop size).
        limit: at most this many pairs per data set.

    Raises:
        ConfigError: no data set given. InputError: as :func:`~ivfusion_ros.eval.dataset.open_datasets`.
    """
    if not paths:
        raise ConfigError("no training data: pass --data DIR[,DIR...]")
    datasets = open_datasets(paths, limit=limit)
    pairs: list[Pair] = []
    sources: list[dict] = []
    for ds in datasets:
        for p in ds.pairs:
            ir, vis = _decode(read_thermal(p.ir), read_visible(p.vis), min_side)
            pairs.append(Pair(f"{ds.name}/{p.name}", ir, vis))
        sources.append({"name": ds.name, "path": str(ds.root or ds.vis_dir), "pairs": len(ds.pairs)})
    return PairSet(pairs, sources)
