"""Shared fixtures: small synthetic images built in the tests (no data files are shipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: The development data beside the repository, when present (never required by the test suite).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ivf"


@pytest.fixture
def one_thread():
    """torch on one thread for the test, restored after: small networks on 2 shared cores run faster and steadier."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def night_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark RGB street with one lamp-lit patch and a glaring light, and a thermal image with a warm figure.

    Returns ``(thermal uint8 (120, 160), rgb uint8 (120, 160, 3))``.
    """
    h, w = 120, 160
    rgb = np.full((h, w, 3), 12, np.uint8)
    rgb[:, 100:] = 110  # a lit region on the right
    yy, xx = np.mgrid[:h, :w]
    glare = (yy - 30) ** 2 + (xx - 130) ** 2 < 8**2
    rgb[glare] = 255
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-3, 4, rgb.shape), 0, 255).astype(np.uint8)
    thermal = np.full((h, w), 60, np.uint8)
    thermal[40:100, 30:50] = 220  # a warm figure in the dark part
    return thermal, rgb
