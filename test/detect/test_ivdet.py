"""The package's own detector: YOLOX-nano network, weight files, ONNX import/export, ``detector.type: ivdet``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ivfusion_ros.config import DetectorConfig
from ivfusion_ros.detect import create_detector
from ivfusion_ros.detect.ivdet import (
    SHIPPED,
    IvdetDetector,
    export_detector_onnx,
    load_detector_weights,
    save_detector_weights,
)
from ivfusion_ros.detect.nets.yolox import STRIDES, YoloxNano, load_onnx_weights, make_grid
from ivfusion_ros.errors import ModelError

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]


def _random_net(seed: int = 0, names=("person", "bicycle", "car")) -> YoloxNano:
    torch.manual_seed(seed)
    net = YoloxNano(names)
    with torch.no_grad():  # a confident object somewhere, so detections exist
        for pred in net.head.obj_preds:
            pred.bias.fill_(2.0)
        for pred in net.head.cls_preds:
            pred.bias.fill_(0.0)
    return net.eval()


def test_shapes_and_parameter_count() -> None:
    net = YoloxNano()
    n = sum(p.numel() for p in net.parameters())
    assert 0.85e6 < n < 0.95e6  # YOLOX-nano with 3 classes; the limit is 5 M
    x = torch.rand(2, 3, 96, 128)
    raw = net.raw(x)
    anchors = sum((96 // s) * (128 // s) for s in STRIDES)
    assert raw.shape == (2, anchors, 8)
    out = net(x)
    grid, strides = make_grid(96, 128)
    # decode: centres are (offset + cell) * stride, sizes exp(log size) * stride, scores are sigmoids
    np.testing.assert_allclose(out[..., :2].detach(), ((raw[..., :2] + grid) * strides[:, None]).detach(), rtol=1e-5)
    np.testing.assert_allclose(out[..., 2:4].detach(), (raw[..., 2:4].exp() * strides[:, None]).detach(), rtol=1e-5)
    assert ((out[..., 4:] > 0) & (out[..., 4:] < 1)).all()


def test_onnx_export_and_import_round_trip(tmp_path: Path) -> None:
    """An export (decode inside) runs in ONNX Runtime like torch, and its convolutions load back into a fresh
    network: the path the COCO YOLOX-nano export takes into training."""
    import onnxruntime as ort

    net = _random_net(1)
    path = export_detector_onnx(net, tmp_path / "d.onnx", (128, 96))
    x = torch.rand(1, 3, 96, 128)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(None, {"images": x.numpy()})
    np.testing.assert_allclose(onnx_out, net(x).detach().numpy(), rtol=1e-4, atol=1e-3)
    assert sess.get_modelmeta().custom_metadata_map["names"] == '{"0": "person", "1": "bicycle", "2": "car"}'

    back = load_onnx_weights(YoloxNano(), path)
    for a, b in zip(net.state_dict().values(), back.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    # keeping a subset of the class channels, in a chosen order
    two = load_onnx_weights(YoloxNano(("car", "person")), path, class_ids=[2, 0])
    torch.testing.assert_close(two.head.cls_preds[0].weight, net.head.cls_preds[0].weight[[2, 0]])


def test_onnx_import_rejects_other_models(tmp_path: Path) -> None:
    bad = tmp_path / "not.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read .*not.onnx as an ONNX model"):
        load_onnx_weights(YoloxNano(), bad)
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 1))
    path = tmp_path / "small.onnx"
    torch.onnx.export(small, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False)
    with pytest.raises(ModelError, match="2 convolutions, YOLOX-nano has .*not a YOLOX-nano export"):
        load_onnx_weights(YoloxNano(), path)
    with pytest.raises(ModelError, match="class id 5 is outside the export's 3 classes"):
        load_onnx_weights(YoloxNano(("a", "b")), export_detector_onnx(_random_net(), tmp_path / "d.onnx", (64, 64)),
                          class_ids=[0, 5])


def test_weights_file_round_trip_and_errors(tmp_path: Path) -> None:
    net = _random_net(2, ("person", "car"))
    path = save_detector_weights(net, tmp_path / "w.pt", (128, 96), {"note": "test"})
    back, header = load_detector_weights(path)
    assert back.class_names == ("person", "car") and header["input_size"] == [128, 96]
    assert header["meta"] == {"note": "test"} and "state_dict" not in header
    x = torch.rand(1, 3, 96, 128)
    torch.testing.assert_close(back(x), net(x))

    with pytest.raises(ModelError, match="detector weights not found: .*nope.pt"):
        load_detector_weights(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot read detector weights .*corrupt.pt"):
        load_detector_weights(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ModelError, match="other.pt is not an ivfusion detector weights file"):
        load_detector_weights(other)
    blob = torch.load(path, weights_only=True)
    blob["class_names"] = ["person", "car", "dog"]
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(ModelError, match="weights do not fit yolox-nano with 3 classes"):
        load_detector_weights(tmp_path / "mismatch.pt")


@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    net = _random_net(3)
    path = save_detector_weights(net, tmp_path / "det.pt", (160, 128))
    export_detector_onnx(net, tmp_path / "det.onnx", (160, 128))
    return path


def test_same_detections_on_torch_and_onnxruntime(weights: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    results = {}
    for backend in ("torch", "onnxruntime"):
        # no NMS and no cap: random weights give many near-equal scores, whose order may differ in the last bit
        cfg = DetectorConfig(type="ivdet", model=str(weights), backend=backend, score_threshold=0.3,
                             nms_threshold=1.0, max_detections=10000)
        det = create_detector(cfg)
        assert isinstance(det, IvdetDetector) and det.input_size == (160, 128)
        assert det.class_names == ("person", "bicycle", "car")
        assert det.describe().startswith("ivdet det.")  # the status message says which detector runs
        results[backend] = det.detect(img)
    a, b = results["torch"], results["onnxruntime"]
    assert len(a) > 0 and len(a) == len(b)

    def rows(d):  # compare as sorted tables
        t = np.column_stack([d.boxes.round(1), d.scores.round(3), d.class_ids])
        return t[np.lexsort(t.T[::-1])]

    np.testing.assert_allclose(rows(a), rows(b), atol=0.11)


def test_onnx_backends_need_the_onnx_beside_a_pt(weights: Path) -> None:
    weights.with_suffix(".onnx").unlink()
    with pytest.raises(ModelError, match="needs the .onnx of .*det.pt; none beside it"):
        create_detector(DetectorConfig(type="ivdet", model=str(weights), backend="onnxruntime"))


def test_corrupt_weights_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="bad.pt"):
        create_detector(DetectorConfig(type="ivdet", model=str(bad), backend="torch"))


@pytest.mark.skipif(not SHIPPED.with_suffix(".onnx").is_file(), reason="shipped detector weights not built yet")
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_shipped_detector_finds_the_demo_people(backend: str) -> None:
    """The shipped weights, loaded by default, find the pedestrians of the demo's night scene in the fused image."""
    from ivfusion_ros.config import PipelineConfig, update_config
    from ivfusion_ros.demo.scene import NightStreetScene
    from ivfusion_ros.detect.boxes import count_matches
    from ivfusion_ros.pipeline import Pipeline

    scene = NightStreetScene(num_frames=4, seed=0)
    cfg = update_config(PipelineConfig(), **{"runtime.device": "cpu", "detector.backend": backend,
                                             "registration.homography": scene.homography.ravel().tolist()})
    assert cfg.detector.type == "ivdet" and cfg.detector.model == ""
    pipe = Pipeline(cfg)
    found = total = 0
    for k in range(len(scene)):
        frame = scene.frame(k)
        res = pipe.process(frame.thermal, frame.rgb, frame.stamp, thermal_encoding="mono16")
        people = frame.boxes[frame.class_ids == 0]
        det = res.detections
        keep = det.class_ids == 0
        found += count_matches(people, det.boxes[keep], det.scores[keep])
        total += len(people)
    assert total > 0 and found >= 0.5 * total, f"found {found} of {total} demo pedestrians"
