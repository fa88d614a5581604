"""Fixtures of the bag tests: tiny image-pair folders written as PNGs and a fast pipeline configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ivfusion_ros.config import PipelineConfig, load_config

W, H = 64, 48
N_PAIRS = 6


def write_pairs(folder: Path, n: int = N_PAIRS, size: tuple[int, int] = (W, H)) -> tuple[Path, Path]:
    """``n`` thermal (8-bit gray: a warm block moving right) / visible (dark, noisy) PNG pairs."""
    w, h = size
    ir_dir, vis_dir = folder / "ir", folder / "vis"
    ir_dir.mkdir(parents=True)
    vis_dir.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        thermal = np.full((h, w), 40, np.uint8)
        thermal[h // 4: 3 * h // 4, 4 + 4 * i: 16 + 4 * i] = 220
        rgb = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        rgb[:, w // 2:] += 120  # a lit half
        cv2.imwrite(str(ir_dir / f"frame_{i:03d}.png"), thermal)
        cv2.imwrite(str(vis_dir / f"frame_{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return ir_dir, vis_dir


@pytest.fixture
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    return write_pairs(tmp_path / "data")


@pytest.fixture
def fast_cfg() -> Iterator[PipelineConfig]:
    """No detector, CPU, one torch thread (a loaded 2-core machine makes torch's thread pool crawl).

    The pipeline sets torch's thread count process-wide: it is restored afterwards.
    """
    threads = torch.get_num_threads()
    yield load_config(None, {"detector.type": "none", "runtime.device": "cpu", "runtime.threads": 1})
    torch.set_num_threads(threads)
