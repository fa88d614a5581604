"""Fixtures of the detection-driven training tests: labelled generated pairs and a random detector weights file."""

from __future__ import annotations

from pathlib import Path

import pytest
from train.tiny_detector import save_random_detector, write_labelled_pairs


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four generated night pairs (64x72) with warm figures, YOLO labels for three of them (one car)."""
    return write_labelled_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def det_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random YOLOX-nano detector weights file (person, bicycle, car)."""
    return save_random_detector(tmp_path_factory.mktemp("det") / "det.pt")
