"""The TensorRT backend: cache key, engine cache, settings checks (everywhere), and real engines (GPU + TensorRT).

The first group needs neither TensorRT nor a GPU: the constructor runs its settings checks before importing
tensorrt, so they are tested on CI. The second group builds real engines and is skipped, with the reason, where
``tensorrt`` is not importable or torch sees no CUDA device.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import logging
import os
import sys
import time
import types
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.runtime.tensorrt_backend import (
    EngineCache,
    TensorRTBackend,
    _is_oom,
    _make_logger,
    _make_progress_monitor,
    calibration_fingerprint,
    default_cache_dir,
    engine_cache_key,
    file_sha256,
    load_calibration_images,
    resolve_input_shapes,
)

KEY_ARGS = {
    "onnx_sha256": "ab" * 32,
    "input_shapes": {"ir": (1, 1, 512, 640), "vis": (1, 1, 512, 640)},
    "precision": "fp16",
    "gpu_name": "NVIDIA Jetson AGX Orin",
    "compute_capability": (8, 7),
    "trt_version": "10.3.0",
}
FUSION_INPUTS = ("ir", "vis", "illum", "glare")


class TinyFusion(nn.Module):
    """Four (B, 1, H, W) inputs, one output, like the package's fusion networks; a few convs, nothing exotic."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(torch.cat([ir, vis, illum, glare], dim=1)))


def _export(path: Path, h: int = 32, w: int = 48, dynamic: bool = False) -> Path:
    net = TinyFusion().eval()
    args = tuple(torch.rand(1, 1, h, w) for _ in FUSION_INPUTS)
    axes = {n: {0: "b", 2: "h", 3: "w"} for n in (*FUSION_INPUTS, "fused")} if dynamic else None
    with warnings.catch_warnings():  # the legacy exporter warns that it is legacy; it is also the fast one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, args, str(path), input_names=list(FUSION_INPUTS), output_names=["fused"],
                          opset_version=17, dynamo=False, dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("onnx") / "tiny-static.onnx")


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("onnx") / "tiny-dynamic.onnx", dynamic=True)


# --- cache key --------------------------------------------------------------------------------------------------------


def test_cache_key_is_stable_and_ignores_dict_order_and_sequence_type() -> None:
    key = engine_cache_key(**KEY_ARGS)
    assert len(key) == 64 and int(key, 16) >= 0
    assert engine_cache_key(**KEY_ARGS) == key
    reordered = dict(KEY_ARGS, input_shapes={"vis": [1, 1, 512, 640], "ir": [1, 1, 512, 640]})
    assert engine_cache_key(**reordered) == key
    assert engine_cache_key(**dict(reversed(list(KEY_ARGS.items())))) == key


@pytest.mark.parametrize(("field", "value"), [
    ("onnx_sha256", "cd" * 32),
    ("input_shapes", {"ir": (1, 1, 480, 640), "vis": (1, 1, 512, 640)}),
    ("input_shapes", {"ir": (1, 1, 512, 640)}),
    ("precision", "fp32"),
    ("precision", "int8"),
    ("gpu_name", "NVIDIA GeForce RTX 4090"),
    ("compute_capability", (8, 9)),
    ("trt_version", "10.4.0"),
])
def test_cache_key_changes_with_each_field(field: str, value: object) -> None:
    assert engine_cache_key(**dict(KEY_ARGS, **{field: value})) != engine_cache_key(**KEY_ARGS)


def test_cache_key_calibration_only_counts_when_given() -> None:
    key = engine_cache_key(**KEY_ARGS)
    assert engine_cache_key(**KEY_ARGS, calibration="") == key
    assert engine_cache_key(**KEY_ARGS, calibration="8:abc") != key
    assert engine_cache_key(**KEY_ARGS, calibration="8:abc") != engine_cache_key(**KEY_ARGS, calibration="9:abc")


def test_default_cache_dir_respects_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "ivfusion" / "engines"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    assert default_cache_dir() == Path.home() / ".cache" / "ivfusion" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "ivfusion" / "engines"
    assert EngineCache().cache_dir == default_cache_dir()


# --- engine cache -----------------------------------------------------------------------------------------------------


def test_engine_cache_paths_and_sidecar_round_trip(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    key = engine_cache_key(**KEY_ARGS)
    model = Path("/models/amfusion-s.onnx")
    path = cache.path_for(model, key)
    assert path == tmp_path / "engines" / f"amfusion-s-{key[:16]}.engine"
    assert cache.calibration_path_for(model, key) == path.with_suffix(".calib")
    assert cache.lookup(model, key) is None

    stored = cache.store(model, key, b"engine bytes", KEY_ARGS, build_seconds=12.3456)
    assert stored == path and path.read_bytes() == b"engine bytes"
    assert cache.lookup(model, key) == path
    record = json.loads(cache.sidecar_for(path).read_text())
    assert record["key"] == key and record["model"] == str(model) and record["build_seconds"] == 12.346
    assert record["input_shapes"] == {"ir": [1, 1, 512, 640], "vis": [1, 1, 512, 640]}
    assert record["compute_capability"] == [8, 7]
    for field in ("onnx_sha256", "precision", "gpu_name", "trt_version", "built_at"):
        assert record[field]
    assert cache.read_record(path) == record

    cache.remove(model, key)
    assert not path.exists() and not cache.sidecar_for(path).exists()
    assert cache.lookup(model, key) is None


def test_engine_without_matching_sidecar_counts_as_missing(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = engine_cache_key(**KEY_ARGS)
    path = cache.store("m.onnx", key, b"x", KEY_ARGS, 1.0)
    cache.sidecar_for(path).unlink()  # a crash between the engine and the sidecar write
    assert cache.lookup("m.onnx", key) is None
    cache.store("m.onnx", key, b"x", KEY_ARGS, 1.0)
    record = cache.read_record(path)
    assert record is not None
    record["key"] = key[:16] + "f" * 48  # a 16-character prefix clash: the full key decides
    cache.sidecar_for(path).write_text(json.dumps(record))
    assert cache.lookup("m.onnx", key) is None


def test_engine_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EngineCache(tmp_path)
    key = engine_cache_key(**KEY_ARGS)
    path = cache.store("m.onnx", key, b"old engine", KEY_ARGS, 1.0)

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.store("m.onnx", key, b"new engine that never lands", KEY_ARGS, 1.0)
    monkeypatch.undo()
    assert path.read_bytes() == b"old engine"  # the old file is intact, no half-written new one
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])

    cache.store("m.onnx", key, b"new engine", KEY_ARGS, 2.0)
    assert path.read_bytes() == b"new engine"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_file_sha256(tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- input shapes -----------------------------------------------------------------------------------------------------


def test_resolve_input_shapes() -> None:
    declared = {"images": (1, 3, -1, -1)}
    assert resolve_input_shapes(Path("y.onnx"), declared, {"images": (1, 3, 384, 640)}) == {"images": (1, 3, 384, 640)}
    assert resolve_input_shapes(Path("y.onnx"), {"images": (1, 3, 640, 640)}, None) == {"images": (1, 3, 640, 640)}
    with pytest.raises(ConfigError, match=r"'images' has dynamic shape 1x3x\?x\?"):
        resolve_input_shapes(Path("y.onnx"), declared, None)
    with pytest.raises(ConfigError, match="does not have"):
        resolve_input_shapes(Path("y.onnx"), declared, {"image": (1, 3, 64, 64)})
    for bad in [(1, 3, 64), (1, 1, 64, 64), (1, 3, 0, 64)]:  # rank, contradicts a static dim, non-positive
        with pytest.raises(ConfigError, match="does not fit"):
            resolve_input_shapes(Path("y.onnx"), declared, {"images": bad})


# --- constructor checks that need no TensorRT -------------------------------------------------------------------------


def test_missing_tensorrt_gives_install_hint(static_onnx: Path, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
    with pytest.raises(ModelError) as err:
        TensorRTBackend(static_onnx, torch.device("cuda"), cache_dir=tmp_path)
    text = str(err.value)
    assert "TensorRT is not installed" in text and "onnxruntime" in text and "torch" in text
    assert str(static_onnx) in text and "1x1x32x48" in text and "fp16" in text


def test_cpu_device_is_a_config_error(static_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TensorRT runs on a CUDA device, not cpu") as err:
        TensorRTBackend(static_onnx, torch.device("cpu"), precision="fp32", cache_dir=tmp_path)
    assert str(static_onnx) in str(err.value) and "1x1x32x48" in str(err.value) and "fp32" in str(err.value)


def test_int8_needs_a_calibration_dir(static_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int8 needs calibration_dir") as err:
        TensorRTBackend(static_onnx, torch.device("cuda"), precision="int8", cache_dir=tmp_path)
    assert "TensorRT int8" in str(err.value) and str(static_onnx) in str(err.value)
    with pytest.raises(ConfigError, match="is not a folder"):
        TensorRTBackend(static_onnx, torch.device("cuda"), precision="int8", cache_dir=tmp_path,
                        calibration_dir=tmp_path / "missing")


def test_dynamic_onnx_needs_input_shapes(dynamic_onnx: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ConfigError, match=r"input 'ir' has dynamic shape \?x1x\?x\?") as err:
        TensorRTBackend(dynamic_onnx, torch.device("cuda"), cache_dir=tmp_path)
    assert str(dynamic_onnx) in str(err.value) and "input_shapes" in str(err.value)
    # with the shapes given the settings are fine and the next stop is the missing TensorRT
    shapes = {n: (1, 1, 64, 64) for n in FUSION_INPUTS}
    with pytest.raises(ModelError, match="TensorRT is not installed") as err2:
        TensorRTBackend(dynamic_onnx, torch.device("cuda"), input_shapes=shapes, cache_dir=tmp_path)
    assert "1x1x64x64" in str(err2.value)


def test_other_settings_errors(static_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        TensorRTBackend(tmp_path / "nope.onnx", torch.device("cuda"))
    with pytest.raises(ConfigError, match="precision must be one of fp32, fp16, int8"):
        TensorRTBackend(static_onnx, torch.device("cuda"), precision="bf16")
    with pytest.raises(ConfigError, match="workspace_gb must be positive"):
        TensorRTBackend(static_onnx, torch.device("cuda"), workspace_gb=0)
    with pytest.raises(ConfigError, match="does not fit"):
        TensorRTBackend(static_onnx, torch.device("cuda"), input_shapes={"ir": (1, 1, 64, 64)})
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        TensorRTBackend(bad, torch.device("cuda"))


# --- int8 calibration images ------------------------------------------------------------------------------------------


def test_load_calibration_images(tmp_path: Path) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 2] = 255  # pure red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "a.png"), rgb)
    cv2.imwrite(str(tmp_path / "b.png"), np.full((40, 60), 65535, np.uint16))  # a 16-bit thermal frame
    (tmp_path / "notes.txt").write_text("not an image")
    rgb_batch = load_calibration_images(tmp_path, 10, 3, 20, 30)
    assert rgb_batch.shape == (2, 3, 20, 30) and rgb_batch.dtype == np.float32
    assert np.allclose(rgb_batch[0, 0], 1.0) and np.allclose(rgb_batch[0, 1:], 0.0)  # RGB order, [0, 1]
    assert np.allclose(rgb_batch[1], 1.0)  # 16-bit full scale -> 1.0
    grey = load_calibration_images(tmp_path, 1, 1, 16, 16)
    assert grey.shape == (1, 1, 16, 16) and 0.0 < grey.max() <= 1.0
    fp = calibration_fingerprint(tmp_path, 10)
    assert fp.startswith("2:") and calibration_fingerprint(tmp_path, 1) != fp
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no readable image"):
        load_calibration_images(tmp_path / "empty", 4, 1, 8, 8)
    with pytest.raises(ConfigError, match="is not a folder"):
        load_calibration_images(tmp_path / "a.png", 4, 1, 8, 8)


# --- TensorRT callbacks, against stand-in base classes (the real ones need the tensorrt module) ---------------------


class _Base:
    def __init__(self) -> None:
        pass


class _Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


FAKE_TRT = types.SimpleNamespace(ILogger=type("ILogger", (_Base,), {"Severity": _Severity}),
                                 IProgressMonitor=type("IProgressMonitor", (_Base,), {}))


def test_progress_monitor_logs_phases_and_percentages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ivfusion_ros.runtime.tensorrt_backend")
    monitor = _make_progress_monitor(FAKE_TRT, "tiny.onnx (1x1x32x48, fp16)")
    monitor.phase_start("Building engine", None, 8)
    monitor.phase_start("Tactic selection", "Building engine", 3)  # nested: DEBUG only
    for step in range(3):
        assert monitor.step_complete("Tactic selection", step) is True
    monitor.phase_finish("Tactic selection")
    assert all(monitor.step_complete("Building engine", step) for step in range(8))
    monitor.phase_finish("Building engine")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "TensorRT build of tiny.onnx (1x1x32x48, fp16): Building engine (8 steps)"
    assert [line.rsplit(" ", 1)[-1] for line in lines[1:-1]] == ["25%", "50%", "75%"]
    assert lines[-1].endswith("Building engine done")
    assert not any("Tactic selection" in line for line in lines)


def test_logger_keeps_errors_and_forwards_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ivfusion_ros.runtime.tensorrt_backend")
    logger = _make_logger(FAKE_TRT)
    logger.log(_Severity.ERROR, "Error Code 2: OutOfMemory (Requested size was 1 GiB)")
    logger.log(_Severity.WARNING, "INT64 weights cast down to INT32")
    logger.log(_Severity.VERBOSE, "noise")
    assert any(r.levelno == logging.WARNING and "INT64 weights" in r.getMessage() for r in caplog.records)
    assert not any("noise" in r.getMessage() for r in caplog.records)
    errors = logger.take_errors()
    assert errors == ["Error Code 2: OutOfMemory (Requested size was 1 GiB)"] and _is_oom(errors)
    assert logger.take_errors() == [] and not _is_oom(["Network has dynamic or shape inputs"])


# --- real engines: TensorRT and a CUDA GPU ----------------------------------------------------------------------------

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(
    not (HAVE_TRT and torch.cuda.is_available()),
    reason="needs TensorRT (pip install tensorrt-cu12 / JetPack) and a CUDA GPU visible to torch"
    f" (tensorrt importable: {HAVE_TRT}, torch.cuda.is_available(): {torch.cuda.is_available()})",
)


def _gpu_inputs(h: int = 32, w: int = 48, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 1, h, w, generator=g).cuda() for _ in FUSION_INPUTS]


@needs_trt
@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-3), ("fp16", 2e-2)])
def test_engine_matches_torch(static_onnx: Path, tmp_path: Path, precision: str, tol: float) -> None:
    backend = TensorRTBackend(static_onnx, torch.device("cuda"), precision=precision, cache_dir=tmp_path)
    assert backend.name == "tensorrt" and backend.input_names == FUSION_INPUTS and backend.output_names == ("fused",)
    assert backend.describe().startswith(f"tensorrt {backend.trt_version} ")
    assert f"{precision} tiny-static.onnx 1x1x32x48 (built)" in backend.describe()
    inputs = _gpu_inputs()
    with torch.no_grad():
        want = TinyFusion().eval().cuda()(*inputs)
    (got,) = backend(*inputs)
    torch.cuda.synchronize()
    assert got.dtype == torch.float32 and got.shape == want.shape and got.device == want.device
    assert (got - want).abs().max().item() < tol
    # non-contiguous / other-dtype inputs go through the persistent buffers and give the same result
    odd = [t.double() for t in inputs[:2]] + [t.transpose(2, 3).contiguous().transpose(2, 3) for t in inputs[2:]]
    (again,) = backend(*odd)
    torch.cuda.synchronize()
    assert (again - want).abs().max().item() < tol


@needs_trt
def test_second_construction_loads_from_cache(static_onnx: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ivfusion_ros.runtime.tensorrt_backend")
    t0 = time.perf_counter()
    first = TensorRTBackend(static_onnx, torch.device("cuda"), precision="fp16", cache_dir=tmp_path)
    build_s = time.perf_counter() - t0
    assert "this takes a while the first time" in caplog.text and not first.cached
    caplog.clear()
    t0 = time.perf_counter()
    second = TensorRTBackend(static_onnx, torch.device("cuda"), precision="fp16", cache_dir=tmp_path)
    load_s = time.perf_counter() - t0
    assert second.cached and "loaded cached engine" in caplog.text and "(cached)" in second.describe()
    assert second.engine_path == first.engine_path and load_s < build_s
    assert len(list(tmp_path.glob("*.engine"))) == 1


@needs_trt
def test_changed_input_shape_builds_another_engine(dynamic_onnx: Path, tmp_path: Path) -> None:
    a = TensorRTBackend(dynamic_onnx, torch.device("cuda"), precision="fp32", cache_dir=tmp_path,
                        input_shapes={n: (1, 1, 32, 48) for n in FUSION_INPUTS})
    b = TensorRTBackend(dynamic_onnx, torch.device("cuda"), precision="fp32", cache_dir=tmp_path,
                        input_shapes={n: (1, 1, 64, 64) for n in FUSION_INPUTS})
    assert a.engine_path != b.engine_path and not b.cached
    assert len(list(tmp_path.glob("*.engine"))) == 2
    (out,) = b(*_gpu_inputs(64, 64))
    assert out.shape == (1, 1, 64, 64)


@needs_trt
def test_corrupt_cached_engine_is_rebuilt(static_onnx: Path, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    first = TensorRTBackend(static_onnx, torch.device("cuda"), precision="fp32", cache_dir=tmp_path)
    first.engine_path.write_bytes(b"\x00" * 128)  # corrupt, sidecar still matching
    caplog.set_level(logging.WARNING, logger="ivfusion_ros.runtime.tensorrt_backend")
    second = TensorRTBackend(static_onnx, torch.device("cuda"), precision="fp32", cache_dir=tmp_path)
    assert "could not be loaded" in caplog.text and not second.cached
    assert second.engine_path.stat().st_size > 128
    (out,) = second(*_gpu_inputs())
    assert torch.isfinite(out).all()


@needs_trt
def test_wrong_input_shape_is_a_model_error(static_onnx: Path, tmp_path: Path) -> None:
    backend = TensorRTBackend(static_onnx, torch.device("cuda"), precision="fp32", cache_dir=tmp_path)
    with pytest.raises(ModelError, match=r"has shape 1x1x64x64, the engine was built for 1x1x32x48"):
        backend(*_gpu_inputs(64, 64))
    with pytest.raises(ModelError, match="expected 4 inputs"):
        backend(*_gpu_inputs()[:3])
