"""OnnxModel: loading errors, providers, and the facts it exposes."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from tiny_yolo_models import NAMES, NET_H, NET_W

from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.runtime import OnnxModel, available_providers


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.onnx"
    with pytest.raises(ModelError, match=rf"^model file not found: {re.escape(str(path))}$"):
        OnnxModel(path)


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(0).bytes(4096), b"", b"this is plain text, not a protobuf"],
    ids=["random", "empty", "text"],
)
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=rf"{re.escape(str(path))}: the file is corrupt or not an ONNX"):
        OnnxModel(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"is a directory, not an ONNX file"):
        OnnxModel(tmp_path)


def test_bad_device_and_threads(tiny_models) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.device: 'tpu' is not one of auto, cpu, cuda"):
        OnnxModel(tiny_models["yolov8"], device="tpu")
    with pytest.raises(ConfigError, match=r"runtime\.threads"):
        OnnxModel(tiny_models["yolov8"], threads=-1)


def test_facts_and_run(tiny_models) -> None:
    m = OnnxModel(tiny_models["yolov8"], threads=1)
    assert m.input_name == "images"
    assert m.input_shape == (1, 3, NET_H, NET_W)
    assert m.input_type == "tensor(float)"
    assert m.output_names == ["output0"]
    assert m.output_shapes == [(1, 4 + len(NAMES), 9)]
    assert m.metadata == {}
    assert m.providers == ["CPUExecutionProvider"]
    outs = m.run(np.zeros((1, 3, NET_H, NET_W), np.float32))
    assert isinstance(outs, list) and len(outs) == 1
    assert outs[0].shape == (1, 4 + len(NAMES), 9) and outs[0].dtype == np.float32
    assert "OnnxModel(" in repr(m)


def test_dynamic_dims_are_none(tiny_models) -> None:
    assert OnnxModel(tiny_models["yolov8_dynamic"]).input_shape == (1, 3, None, None)


def test_metadata(tiny_models) -> None:
    assert OnnxModel(tiny_models["yolov8_names"]).metadata["names"] == "{0: 'car', 1: 'person', 2: 'dog'}"


def test_run_failure_is_model_error(tiny_models) -> None:
    m = OnnxModel(tiny_models["yolov8"])
    with pytest.raises(ModelError, match=r"inference with .*yolov8\.onnx failed on input \(1, 3, 8, 8\)"):
        m.run(np.zeros((1, 3, 8, 8), np.float64))


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="CUDA provider present")
def test_cuda_without_provider_warns_and_uses_cpu(tiny_models, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ivfusion_ros.runtime.onnx_session"):
        m = OnnxModel(tiny_models["yolov8"], device="cuda")
    assert m.providers == ["CPUExecutionProvider"]
    assert "device 'cuda' requested" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ivfusion_ros.runtime.onnx_session"):
        OnnxModel(tiny_models["yolov8"], device="auto")
    assert caplog.text == ""  # auto falls back silently
