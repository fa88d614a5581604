"""Reading image pairs from files and folders (datasets store IR and VIS under the same file name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ivfusion_ros.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "ImagePair", "find_pairs", "read_thermal", "read_visible"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImagePair:
    """One thermal/visible pair on disk."""

    name: str  # file stem shared by both
    ir: Path
    vis: Path


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def find_pairs(ir: str | Path, vis: str | Path) -> list[ImagePair]:
    """Pair two files, or the files of two folders by file stem.

    Raises:
        InputError: a path is missing, one is a file and the other a folder, or no names match (the message
            says how many images each side has).
    """
    ir, vis = Path(ir), Path(vis)
    for p in (ir, vis):
        if not p.exists():
            raise InputError(f"no such file or folder: {p}", reason="missing")
    if ir.is_file() and vis.is_file():
        return [ImagePair(vis.stem, ir, vis)]
    if ir.is_dir() and vis.is_dir():
        a, b = _images(ir), _images(vis)
        names = sorted(a.keys() & b.keys())
        if not names:
            raise InputError(f"no image names in common between {ir} ({len(a)} images) and {vis} ({len(b)} images)",
                             reason="missing")
        return [ImagePair(n, a[n], b[n]) for n in names]
    raise InputError(f"--ir and --vis must both be files or both be folders: {ir}, {vis}", reason="bad_input")


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"cannot read image {path} (missing, corrupt or not an image)", reason="bad_file")
    return img


def read_thermal(path: str | Path) -> np.ndarray:
    """A thermal image as one channel: uint8 or uint16 (16-bit PNG/TIFF kept radiometric), or float32.

    Colour-stored gray images (three equal channels, as in TNO) are reduced to one channel.
    """
    img = _read(Path(path))
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = img.astype(np.float32)
    return img


def read_visible(path: str | Path) -> np.ndarray:
    """A visible image as RGB uint8 ``(H, W, 3)`` (gray files are replicated; 16-bit files scaled to 8 bit)."""
    img = _read(Path(path))
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"visible image {path}: unsupported pixel type {img.dtype}", reason="bad_encoding")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
