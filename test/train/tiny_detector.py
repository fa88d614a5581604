"""Test helpers for detector-driven fusion training: a random YOLOX-nano detector file and labelled pairs.

The shipped detector weights are not needed (nor present in a source checkout): a randomly initialised
``YoloxNano`` saved with ``save_detector_weights`` exercises every code path, since the tests check how the
detector is wired (what it sees, where its gradient goes, what it updates), not how well it detects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ivfusion_ros.detect.ivdet import save_detector_weights
from ivfusion_ros.detect.nets.yolox import YoloxNano

CLASSES = ("person", "bicycle", "car")


def random_detector(seed: int = 0, classes: Sequence[str] = CLASSES) -> YoloxNano:
    """A YOLOX-nano with seeded random weights (eval mode)."""
    torch.manual_seed(seed)
    return YoloxNano(tuple(classes)).eval()


def save_random_detector(path: Path, seed: int = 0, classes: Sequence[str] = CLASSES) -> Path:
    """A detector weights file of :func:`random_detector` (input size 64x64)."""
    return save_detector_weights(random_detector(seed, classes), path, (64, 64), {"test": True})


def write_labelled_pairs(root: Path, label_classes: Sequence[str] = CLASSES, n: int = 4) -> Path:
    """``n`` generated night pairs (64x72) with warm figures; YOLO labels (class table ``label_classes``) for all
    but the last, one of them with a second object (class index 2)."""
    for d in ("ir", "vi", "labels"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "labels" / "classes.txt").write_text("\n".join(label_classes) + "\n")
    rng = np.random.default_rng(0)
    for i in range(n):
        vis = np.full((64, 72, 3), 15 + 10 * i, np.uint8)
        vis[:, 40:] = 120
        vis = np.clip(vis + rng.integers(-8, 9, vis.shape), 0, 255).astype(np.uint8)
        ir = np.full((64, 72), 70, np.uint8)
        x0 = 10 + 5 * i
        ir[20:50, x0:x0 + 12] = 210
        ir = np.clip(ir + rng.integers(-5, 6, ir.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{i:02d}.png"), vis)
        if i < n - 1:
            lines = [f"0 {(x0 + 6) / 72:.4f} {35 / 64:.4f} {12 / 72:.4f} {30 / 64:.4f}"]
            if i == 0:
                lines.append(f"2 {55 / 72:.4f} {50 / 64:.4f} {14 / 72:.4f} {8 / 64:.4f}")
            (root / "labels" / f"{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return root


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of ``module``'s parameters by name."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
    """Names (starting with ``prefix``) of the parameters that differ from ``before``."""
    return [k for k, v in module.named_parameters() if k.startswith(prefix) and not torch.equal(v, before[k])]
