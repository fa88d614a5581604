"""The backends behind fusion networks and detectors: same numbers as torch on the CPU, clear errors, and the
CUDA features (fp16, CUDA graphs, channels-last, the device-resident pipeline) where a GPU is present."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ivfusion_ros.config import DetectorConfig, PipelineConfig, RuntimeConfig, update_config
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion import create_fuser
from ivfusion_ros.fusion.base import FusionContext
from ivfusion_ros.pipeline import Pipeline
from ivfusion_ros.runtime.backend import BackendOptions, OrtBackend, TorchBackend, describe_failure

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 1, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.relu(self.conv(torch.cat((a, b), 1)))))


class _Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("kernel exploded")


def _opts(device: str = "cpu", **kw) -> BackendOptions:
    return BackendOptions.from_config(RuntimeConfig(**kw), torch.device(device))


def test_options_resolve_auto_precision_per_device() -> None:
    assert _opts().precision == "fp32"
    assert not _opts(cuda_graphs=True).cuda_graphs  # CUDA graphs and channels-last are CUDA-only
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        _opts(precision="fp16")


def test_torch_backend_matches_the_module_and_bf16_is_close() -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    a, b = torch.rand(1, 1, 32, 48), torch.rand(1, 1, 32, 48)
    ref = net(a, b)
    out = TorchBackend(net, _opts())(a, b)
    assert len(out) == 1 and out[0].dtype == torch.float32
    torch.testing.assert_close(out[0], ref)
    bf16 = TorchBackend(copy.deepcopy(net), _opts(precision="bf16"))
    low = bf16(a, b)[0]
    assert low.dtype == torch.float32 and (low - ref).abs().max() < 2e-2


def test_int8_needs_tensorrt() -> None:
    with pytest.raises(ConfigError, match="int8 needs tensorrt"):
        TorchBackend(_Net(), _opts(precision="int8"))


def test_a_failing_network_names_model_shape_and_backend() -> None:
    backend = TorchBackend(_Boom(), _opts(), label="boom.pt")
    with pytest.raises(ModelError, match=r"boom.pt: backend torch failed on input 1x3x8x8: RuntimeError: kernel "
                                         r"exploded"):
        backend(torch.zeros(1, 3, 8, 8))
    oom = describe_failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "net.onnx",
                           [(1, 1, 1024, 1280)], "tensorrt")
    assert "net.onnx: backend tensorrt failed on input 1x1x1024x1280: the GPU ran out of memory" in str(oom)


@pytest.fixture(scope="module")
def amf_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ivfusion_ros.fusion.learned import default_weights
    from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights
    from ivfusion_ros.runtime.export import export_onnx

    header = load_weights(default_weights("amfusion"))
    path = tmp_path_factory.mktemp("onnx") / "amfusion-s.onnx"
    return export_onnx(build_from_weights(header), path, meta=header.meta, exporter="torchscript", check=False).path


def test_ort_backend_matches_torch_on_the_cpu(amf_onnx: Path) -> None:
    torch.manual_seed(1)
    xs = [torch.rand(1, 1, 64, 96) for _ in range(4)]
    ort_out = OrtBackend(amf_onnx, _opts(threads=1))(*xs)[0]
    ref = create_fuser("amfusion").runner(*xs)[0]
    assert ort_out.shape == (1, 1, 64, 96)
    assert (ort_out - ref).abs().max() < 1e-4


def test_fusion_backend_onnxruntime_exports_the_shipped_weights_once(tmp_path: Path) -> None:
    rt = RuntimeConfig(engine_cache=str(tmp_path), threads=1)
    fuser = create_fuser("amfusion", backend="onnxruntime", runtime=rt)
    exported = list(tmp_path.glob("amfusion-s-*.onnx"))
    assert fuser.backend == "onnxruntime" and len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    again = create_fuser("amfusion", backend="onnxruntime", runtime=rt)
    assert exported[0].stat().st_mtime_ns == stamp  # reused, not exported again
    ir, vis = torch.rand(1, 1, 60, 90), torch.rand(1, 3, 60, 90)
    ctx = FusionContext.uniform(ir, 0.2)
    ref = create_fuser("amfusion").fuse(ir, vis, ctx)
    assert (again.fuse(ir, vis, ctx) - ref).abs().max() < 1e-4
    assert "onnxruntime" in again.describe()


def test_tensorrt_backend_without_tensorrt_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    fuser = create_fuser("amfusion", backend="tensorrt", runtime=RuntimeConfig(engine_cache=str(tmp_path)))
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises((ModelError, ConfigError), match="(?i)tensorrt"):
        fuser.fuse(x, x.expand(-1, 3, -1, -1), FusionContext.uniform(x))


# ------------------------------------------------------------------ CUDA


@needs_cuda
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2), ("bf16", 4e-2)])
@pytest.mark.parametrize("variant", ["amfusion", "tsjnet", "t2p"])
def test_learned_variants_on_cuda_match_the_cpu(variant, precision, tol) -> None:
    torch.manual_seed(2)
    ir, vis = torch.rand(1, 1, 120, 160), torch.rand(1, 3, 120, 160)
    ctx = FusionContext.uniform(ir, 0.3)
    ref = create_fuser(variant).fuse(ir, vis, ctx)
    fuser = create_fuser(variant, device="cuda", runtime=RuntimeConfig(device="cuda", precision=precision))
    ctx_gpu = FusionContext.uniform(ir.cuda(), 0.3)
    for _ in range(3):  # the first call captures the CUDA graph, the next ones replay it
        out = fuser.fuse(ir.cuda(), vis.cuda(), ctx_gpu)
    assert out.device.type == "cuda"
    assert (out.cpu() - ref).abs().max() < tol


@needs_cuda
def test_cuda_graph_replay_follows_new_inputs_and_sizes() -> None:
    torch.manual_seed(3)
    net = _Net().cuda().eval()
    backend = TorchBackend(net, _opts("cuda", precision="fp32", cuda_graphs=True))
    for shape in [(1, 1, 64, 64), (1, 1, 64, 64), (1, 1, 32, 96)]:
        a, b = torch.rand(shape, device="cuda"), torch.rand(shape, device="cuda")
        torch.testing.assert_close(backend(a, b)[0], net(a, b), atol=1e-4, rtol=1e-4)
    assert len(backend._graphs) == 2  # one graph per input size


@needs_cuda
def test_device_auto_picks_cuda() -> None:
    assert Pipeline(PipelineConfig(detector=DetectorConfig(type="none"))).device.type == "cuda"


@needs_cuda
@pytest.mark.parametrize("variant", ["adaptive", "amfusion"])
def test_pipeline_on_cuda_matches_the_cpu(variant, caplog) -> None:
    from ivfusion_ros.demo.scene import NightStreetScene

    scene = NightStreetScene(width=320, height=256, num_frames=3, seed=0)
    base = update_config(PipelineConfig(), **{"registration.homography": scene.homography.ravel().tolist(),
                                              "fusion.variant": variant, "detector.type": "none"})
    cpu = Pipeline(update_config(base, **{"runtime.device": "cpu"}))
    gpu = Pipeline(update_config(base, **{"runtime.device": "cuda", "runtime.precision": "fp32"}))
    for i in range(3):
        f = scene.frame(i)
        a = cpu.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
        b = gpu.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
        assert a.regime == b.regime and abs(a.illumination - b.illumination) < 1e-3
        diff = np.abs(a.fused.astype(int) - b.fused.astype(int))
        assert diff.max() <= 3 and diff.mean() < 0.05, (diff.max(), diff.mean())


def _scene_frames(n: int = 4, w: int = 320, h: int = 256):
    from ivfusion_ros.demo.scene import NightStreetScene

    scene = NightStreetScene(width=w, height=h, num_frames=n, seed=1)
    return scene, [scene.frame(i) for i in range(n)]


@needs_cuda
@pytest.mark.parametrize("variant", ["adaptive", "amfusion"])
def test_stage_graphs_give_what_the_eager_stages_give(variant, tmp_path: Path, caplog) -> None:
    """The captured stages (decode, registration, illumination, fusion, detection post-processing) against the same
    pipeline run eagerly, over frames (the AGC state is carried by the graphs), with a YOLO on the device."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detect"))  # the detector tests' tiny models
    from tiny_yolo_models import NAMES, NET_H, NET_W, make_module

    ts = tmp_path / "tiny.torchscript"
    torch.jit.save(torch.jit.trace(make_module("yolov8"), torch.zeros(1, 3, NET_H, NET_W)), str(ts))
    scene, frames = _scene_frames()
    base = update_config(PipelineConfig(), **{
        "registration.homography": scene.homography.ravel().tolist(), "fusion.variant": variant,
        "runtime.device": "cuda", "runtime.precision": "fp32", "detector.type": "yolo", "detector.model": str(ts),
        "detector.backend": "torch", "detector.class_names": list(NAMES), "detector.input_size": [NET_W, NET_H]})
    graphed = Pipeline(base)
    eager = Pipeline(update_config(base, **{"runtime.cuda_graphs": False}))
    for f in frames:
        a = eager.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
        b = graphed.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
        assert a.regime == b.regime and a.illumination == pytest.approx(b.illumination, abs=1e-6)
        assert np.abs(a.fused.astype(int) - b.fused.astype(int)).max() <= 1
        np.testing.assert_array_equal(a.detections.class_ids, b.detections.class_ids)
        np.testing.assert_allclose(a.detections.boxes, b.detections.boxes, atol=1e-3)
    assert "cannot be captured" not in caplog.text  # every stage was captured, none fell back
    assert len(graphed._graphs) == (4 if variant == "adaptive" else 3) and len(eager._graphs) == 0
    assert len(graphed.detector._graphs) == 2  # letterbox and post-processing


@needs_cuda
def test_stage_graphs_follow_run_time_parameter_changes() -> None:
    scene, frames = _scene_frames()
    base = update_config(PipelineConfig(), **{"registration.homography": scene.homography.ravel().tolist(),
                                              "runtime.device": "cuda", "detector.type": "none"})
    graphed = Pipeline(base)
    eager = Pipeline(update_config(base, **{"runtime.cuda_graphs": False}))
    for i, f in enumerate(frames):
        if i == 2:  # a live parameter change: the captured kernels hold the old gain and must be dropped
            for p in (graphed, eager):
                p.update_config(update_config(p.config, **{"fusion.detail_gain": 3.0}))
        a = eager.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
        b = graphed.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
        assert np.abs(a.fused.astype(int) - b.fused.astype(int)).max() <= 1, i


@needs_cuda
def test_a_stage_that_cannot_be_captured_runs_eagerly(caplog) -> None:
    from ivfusion_ros.runtime.graphs import StageGraphs

    graphs = StageGraphs(True)
    x = torch.arange(4.0, device="cuda")

    def reads_back(t: torch.Tensor) -> tuple[torch.Tensor]:
        return (t * float(t.sum()),)  # a read-back: not capturable

    with caplog.at_level(logging.WARNING):
        out = graphs.run("bad", reads_back, x)[0]
    torch.testing.assert_close(out, x * 6.0)
    assert "cannot be captured" in caplog.text and len(graphs) == 0
    torch.testing.assert_close(graphs.run("bad", reads_back, x + 1)[0], (x + 1) * 10.0)


def test_torch_compile_gives_the_same_numbers() -> None:
    """``runtime.compile``: torch.compile (inductor) on the backend's module; the first call compiles."""
    torch.manual_seed(4)
    net = _Net().eval()
    a, b = torch.rand(1, 1, 16, 24), torch.rand(1, 1, 16, 24)
    backend = TorchBackend(copy.deepcopy(net), _opts(compile=True))
    assert "compiled" in backend.describe()
    torch.testing.assert_close(backend(a, b)[0], net(a, b), atol=1e-5, rtol=1e-5)
