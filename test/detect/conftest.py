"""Fixtures for the detection tests: tiny ONNX YOLO models exported once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_yolo_models import GRAY, NAMES, build_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the tiny models: one static 320x256 model per layout, plus variants.

    Keys: ``yolov5``, ``yolov8``, ``end2end`` (static, no metadata), ``yolov8_dynamic`` (dynamic H, W),
    ``yolov8_names`` (with Ultralytics-style ``names`` metadata), ``yolov8_half`` (float16).
    """
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    d = tmp_path_factory.mktemp("tiny_yolo")
    models = {layout: build_model(layout, d / f"{layout}.onnx") for layout in ("yolov5", "yolov8", "end2end")}
    models["yolov8_dynamic"] = build_model("yolov8", d / "yolov8_dynamic.onnx", dynamic=True)
    names_literal = "{" + ", ".join(f"{i}: {n!r}" for i, n in enumerate(NAMES)) + "}"
    models["yolov8_names"] = build_model("yolov8", d / "yolov8_names.onnx", names_metadata=names_literal)
    models["yolov8_half"] = build_model("yolov8", d / "yolov8_half.onnx", half=True)
    return models


@pytest.fixture
def gray_image():
    """Factory for uniform RGB uint8 images ``(h, w, 3)`` of a gray level (default: the pad value 114)."""

    def make(w: int, h: int, level: int = GRAY) -> np.ndarray:
        return np.full((h, w, 3), level, np.uint8)

    return make
