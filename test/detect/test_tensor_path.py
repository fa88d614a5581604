"""The YOLO detector's tensor path (GPU path, run here on the CPU) against the numpy/OpenCV path.

The tensor path runs for ``detector.backend: torch`` anywhere and for every backend on CUDA; each of its steps is
held to its numpy counterpart, and the whole detector to the same closed-form detections as the ONNX tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_yolo_models import LAYOUTS, NAMES, NET_H, NET_W, expected_detections, make_module

from ivfusion_ros.config import DetectorConfig, RuntimeConfig
from ivfusion_ros.detect import tensor_ops
from ivfusion_ros.detect.letterbox import Letterbox
from ivfusion_ros.detect.nms import batched_nms
from ivfusion_ros.detect.yolo import YoloDetector
from ivfusion_ros.detect.yolo_decode import decode
from ivfusion_ros.errors import ModelError

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def _torchscript(layout: str, path: Path, names: bool = True, imgsz: bool = True) -> Path:
    module = torch.jit.trace(make_module(layout), torch.zeros(1, 3, NET_H, NET_W))
    config = {}
    if names:
        config["names"] = {str(i): n for i, n in enumerate(NAMES)}
    if imgsz:
        config["imgsz"] = [NET_H, NET_W]
    torch.jit.save(module, str(path), _extra_files={"config.txt": json.dumps(config)})
    return path


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ts")
    return {layout: _torchscript(layout, d / f"{layout}.torchscript") for layout in LAYOUTS}


def _check(det, expected) -> None:
    assert [int(c) for c in det.class_ids] == [e[3] for e in expected], det.to_dicts()
    np.testing.assert_allclose(det.boxes, np.array([e[1] for e in expected]).reshape(-1, 4), atol=1.0)
    np.testing.assert_allclose(det.scores, [e[2] for e in expected], atol=1e-3)


@pytest.mark.parametrize("size", [(640, 480), (300, 500), (NET_W, NET_H)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_torchscript_detector_finds_the_known_boxes(scripted, gray_image, layout, size) -> None:
    det = YoloDetector(DetectorConfig(type="yolo", model=str(scripted[layout]), backend="torch"), device="cpu")
    assert det.accepts_tensors and det.class_names == NAMES  # names and size from config.txt
    assert det.input_size == (NET_W, NET_H)
    _check(det.detect(gray_image(*size)), expected_detections(layout, *size))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tensor_and_numpy_paths_agree_on_the_same_model(tiny_models, scripted, layout) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 500, 3), np.uint8)
    onnx = YoloDetector(DetectorConfig(type="yolo", model=str(tiny_models[layout]), class_names=NAMES))
    ts = YoloDetector(DetectorConfig(type="yolo", model=str(scripted[layout]), backend="torch"))
    a, b = onnx.detect(img), ts.detect(img)
    assert not onnx.accepts_tensors and len(a) == len(b) > 0
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    # the candidate whose score is the input mean: the OpenCV and torch resizes round a few pixels differently
    np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)
    # a (1, 3, H, W) float tensor gives what the uint8 image gives
    as_float = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    c = ts.detect_tensor(as_float)
    np.testing.assert_allclose(c.boxes, b.boxes, atol=1e-4)


def test_letterbox_tensor_matches_opencv() -> None:
    rng = np.random.default_rng(0)
    for w, h in [(640, 512), (300, 500), (1280, 720), (320, 256)]:
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        ref_lb, lb = Letterbox(NET_W, NET_H), Letterbox(NET_W, NET_H)
        ref = ref_lb(img).copy()
        out = torch.empty(1, 3, NET_H, NET_W)
        got = tensor_ops.letterbox_tensor(torch.from_numpy(img), lb, out).numpy()
        assert lb.content_box == ref_lb.content_box and lb.scale == ref_lb.scale
        top = lb.content_box[1]
        np.testing.assert_array_equal(got[..., :top, :], ref[..., :top, :])  # padding is exactly 114
        # OpenCV's fixed-point bilinear and torch's float bilinear differ by at most one gray level
        assert np.abs(got - ref).max() <= 1.0 / 255.0 + 1e-6
        assert np.abs(got - ref).mean() < 0.2 / 255.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_decode_dense_with_threshold_matches_numpy_decode(layout) -> None:
    rng = np.random.default_rng(1)
    shape = {"yolov5": (1, 300, 5 + 4), "yolov8": (1, 4 + 4, 300), "end2end": (1, 40, 6)}[layout]
    out = rng.random(shape, dtype=np.float32) * 100
    if layout == "yolov8":
        out[0, 4:] /= 100.0
    elif layout == "yolov5":
        out[0, :, 4:] /= 100.0
    else:
        out[0, :, 4] /= 100.0
        out[0, :, 5] = rng.integers(0, 4, 40)
    boxes, scores, ids = decode(out, layout, 0.3)
    db, ds, di = tensor_ops.decode_dense(torch.from_numpy(out), layout)
    keep = ds >= 0.3
    np.testing.assert_allclose(db[keep].numpy(), boxes, rtol=1e-6)
    np.testing.assert_allclose(ds[keep].numpy(), scores, rtol=1e-6)
    np.testing.assert_array_equal(di[keep].numpy(), ids)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou", [0.3, 0.45, 0.7])
def test_fixed_point_nms_is_greedy_nms(seed, iou) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.random((n, 2)) * 200  # crowded: long suppression chains
    wh = rng.random((n, 2)) * 60 + 5
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    ids = rng.integers(0, 3, n)
    ref = batched_nms(boxes, scores, ids, iou, 1000)
    order = np.argsort(-scores, kind="stable")
    keep = tensor_ops.nms_fixed_point(torch.from_numpy(boxes[order]), torch.from_numpy(ids[order]),
                                      torch.ones(n, dtype=torch.bool), iou)
    np.testing.assert_array_equal(order[keep.numpy()], ref)


def test_fixed_point_nms_ignores_invalid_candidates() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12]], dtype=torch.float32)
    ids = torch.zeros(3, dtype=torch.long)
    # the best box is invalid (e.g. below the score threshold): it must not suppress the second one, which
    # then suppresses the third
    keep = tensor_ops.nms_fixed_point(boxes, ids, torch.tensor([False, True, True]), 0.5)
    assert keep.tolist() == [False, True, False]


def test_a_suppression_chain_longer_than_the_graph_rounds_is_finished_exactly() -> None:
    """Box i overlaps box i+1 (IoU 0.54) but not i+2: greedy NMS keeps every other box of a 30-box chain, which
    takes more fixed-point rounds than the captured graph runs; the host side must finish it."""
    n = 30
    x1 = np.arange(n, dtype=np.float32) * 3
    boxes = np.stack([x1, np.zeros(n), x1 + 10, np.full(n, 10)], 1).astype(np.float32)
    scores = np.linspace(0.9, 0.5, n, dtype=np.float32)
    out = np.zeros((1, 5, n), np.float32)  # yolov8 layout, one class
    out[0, 0], out[0, 1] = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    out[0, 2], out[0, 3], out[0, 4] = 10, 10, scores
    lb = Letterbox(200, 200)
    lb.fit(200, 200)
    dense = tensor_ops.postprocess_dense(torch.from_numpy(out), "yolov8", lb, 0.25, 0.45, 100)
    assert not dense[0][0, 7]  # not converged inside the graph's rounds
    rows = tensor_ops.select(dense, 100)
    ref = batched_nms(boxes, scores, np.zeros(n, np.int64), 0.45, 100)
    np.testing.assert_array_equal(ref, np.arange(0, n, 2))
    np.testing.assert_allclose(rows[:, :4], boxes[ref], atol=1e-4)
    assert n // 2 > tensor_ops.GRAPH_NMS_ROUNDS


def test_torchscript_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        YoloDetector(DetectorConfig(type="yolo", model=str(tmp_path / "nope.pt"), backend="torch"))
    bad = tmp_path / "bad.torchscript"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="TorchScript"):
        YoloDetector(DetectorConfig(type="yolo", model=str(bad), backend="torch"))


def test_torchscript_without_metadata_uses_config(tmp_path: Path, gray_image) -> None:
    path = _torchscript("yolov8", tmp_path / "bare.torchscript", names=False, imgsz=False)
    det = YoloDetector(DetectorConfig(type="yolo", model=str(path), backend="torch", class_names=NAMES,
                                      input_size=(NET_W, NET_H)))
    _check(det.detect(gray_image(640, 480)), expected_detections("yolov8", 640, 480))


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_tensor_path_matches_the_cpu(scripted, tiny_models, precision) -> None:
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (512, 640, 3), np.uint8)
    cpu = YoloDetector(DetectorConfig(type="yolo", model=str(tiny_models["yolov8"]), class_names=NAMES)).detect(img)
    for backend, model in [("torch", scripted["yolov8"]), ("onnxruntime", tiny_models["yolov8"])]:
        det = YoloDetector(DetectorConfig(type="yolo", model=str(model), backend=backend, class_names=NAMES),
                           device="cuda", runtime=RuntimeConfig(device="cuda", precision=precision))
        assert det.accepts_tensors
        gpu = det.detect_tensor(torch.from_numpy(img).cuda())
        np.testing.assert_array_equal(gpu.class_ids, cpu.class_ids)
        np.testing.assert_allclose(gpu.boxes, cpu.boxes, atol=0.5)
        np.testing.assert_allclose(gpu.scores, cpu.scores, atol=5e-3 if precision == "fp16" else 2e-3)
