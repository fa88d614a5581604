"""``ivfusion train-detector``: data loading and its errors, augmentation, SimOTA, the loop, resume and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ivfusion_ros.detect.nets.yolox import YoloxNano
from ivfusion_ros.detect.nets.yolox_loss import DetectionLoss
from ivfusion_ros.errors import ConfigError, InputError, ModelError
from ivfusion_ros.train.detection_data import Augment, DetectionSet, DetSample, load_detection_set, read_data_file
from ivfusion_ros.train.detector_trainer import DetectorTrainConfig, build_network, train_detector

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")]

CLASSES = ("person", "bicycle", "car")


def _write_set(root: Path, n: int = 3, vis: bool = True, classes: str = "person\nbicycle\ncar\n") -> None:
    """A tiny data set: 64x48 pairs with one bright 'person' each, labels per modality."""
    for sub in ("ir", *(("vi",) if vis else ())):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for m in ("fusion", "infrared", "visible"):
        (root / "labels" / m).mkdir(parents=True, exist_ok=True)
    (root / "labels" / "classes.txt").write_text(classes)
    for i in range(n):
        ir = np.full((48, 64), 40, np.uint8)
        ir[10:30, 20:28] = 220
        cv2.imwrite(str(root / "ir" / f"p{i}.png"), ir)
        if vis:
            cv2.imwrite(str(root / "vi" / f"p{i}.png"), np.full((48, 64, 3), 90, np.uint8))
        for m in ("fusion", "infrared", "visible"):
            (root / "labels" / m / f"p{i}.txt").write_text("0 0.375 0.41666 0.125 0.41666\n")


def _data_yaml(tmp_path: Path, train: str, val: str) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(f"classes: [person, bicycle, car]\ntrain:\n{train}\nval:\n{val}\n")
    return path


def test_load_makes_every_input_and_counts_what_it_skips(tmp_path: Path) -> None:
    _write_set(tmp_path / "pairs", n=3)
    _write_set(tmp_path / "ironly", n=2, vis=False)
    (tmp_path / "pairs" / "labels" / "visible" / "p2.txt").unlink()  # one modality unlabelled: skipped, counted
    (tmp_path / "pairs" / "ir" / "p1.png").write_bytes(b"not a png")  # unreadable: skipped, counted
    cv2.imwrite(str(tmp_path / "pairs" / "vi" / "lonely.png"), np.zeros((48, 64, 3), np.uint8))  # no partner
    data = _data_yaml(tmp_path, "  - {root: pairs, inputs: [fused, ir, vis, 'fused:max']}\n"
                                "  - {root: ironly, inputs: [ir], repeat: 2}", "  - {root: pairs}")
    classes, train, _ = read_data_file(data)
    assert classes == CLASSES and train[0].root == tmp_path / "pairs"
    ds = load_detection_set(train, classes)
    counts = {k: len(v) for k, v in ds.by_input().items()}
    assert counts == {"fused": 2, "fused:max": 2, "ir": 6, "vis": 1}  # the thermal-only set twice (repeat: 2)
    by = ds.by_input()
    # fused:max is the pixel-wise maximum of the registered thermal (220 in the box) and the visible (90) luma
    assert by["fused:max"][0].image[20, 24].min() >= 200 and by["fused:max"][0].image[5, 5].max() <= 100
    assert ds.sources[1] == {"root": str(tmp_path / "ironly"), "images": 2, "samples": {"ir": 2}, "repeat": 2}
    assert ds.skipped == {"no label file (visible)": 1, "unreadable image": 1, "unpaired image": 1}
    s = ds.samples[0]
    assert s.image.shape == (48, 64, 3) and s.image.dtype == np.uint8
    np.testing.assert_allclose(s.boxes, [[20, 10, 28, 30]], atol=0.01)
    ir_only = [x for x in ds.samples if x.name.startswith("p") and x.input == "ir"][-1]
    assert (ir_only.image[..., 0] == ir_only.image[..., 2]).all()  # thermal as grey RGB, as the pipeline shows it


def test_label_classes_map_by_name(tmp_path: Path) -> None:
    _write_set(tmp_path / "s", n=1, classes="car\nperson\n")  # label class 0 is "car" here
    ds = load_detection_set(read_data_file(_data_yaml(tmp_path, "  - {root: s, inputs: [fused]}", "  - {root: s}"))[1],
                            CLASSES)
    assert ds.samples[0].classes.tolist() == [2]


@pytest.mark.parametrize(("label", "classes", "error", "match"), [
    ("0 0.5 0.5 0.2 1.7\n", None, InputError, r"p0.txt:1: coordinates must be normalised"),
    ("7 0.5 0.5 0.2 0.2\n", None, InputError, r"p0.txt:1: class 7 is not in the class table \(3 names\)"),
    ("0 0.5 0.5 0.2\n", None, InputError, r"p0.txt:1: expected 5 fields"),
    ("0 0.5 0.5 0.2 0.2\n", "person\ndog\n", ConfigError, r"classes.txt: class\(es\) \['dog'\] are not among the "
                                                           r"detector's classes"),
])
def test_bad_labels_name_the_file(tmp_path: Path, label: str, classes: str | None, error: type, match: str) -> None:
    _write_set(tmp_path / "s", n=1, **({"classes": classes} if classes else {}))
    (tmp_path / "s" / "labels" / "fusion" / "p0.txt").write_text(label)
    specs = read_data_file(_data_yaml(tmp_path, "  - {root: s, inputs: [fused]}", "  - {root: s}"))[1]
    with pytest.raises(error, match=match):
        load_detection_set(specs, CLASSES)


def test_data_sets_without_usable_images_or_labels(tmp_path: Path) -> None:
    _write_set(tmp_path / "s", n=2)
    for f in (tmp_path / "s" / "labels" / "fusion").iterdir():
        f.unlink()
    specs = read_data_file(_data_yaml(tmp_path, "  - {root: s, inputs: [fused]}", "  - {root: s}"))[1]
    with pytest.raises(InputError, match=r"no usable labelled image \(skipped: \{'no label file \(fusion\)': 2\}\)"):
        load_detection_set(specs, CLASSES)
    (tmp_path / "s" / "labels" / "classes.txt").unlink()
    specs = read_data_file(_data_yaml(tmp_path, "  - {root: s, inputs: [ir]}", "  - {root: s}"))[1]
    with pytest.raises(InputError, match="no classes.txt found"):
        load_detection_set(specs, CLASSES)
    specs = read_data_file(_data_yaml(tmp_path, "  - {root: s, inputs: [vis]}", "  - {root: s}"))[1]
    (tmp_path / "s" / "vi").rename(tmp_path / "s" / "elsewhere")
    with pytest.raises(InputError, match="need visible images"):
        load_detection_set(specs, CLASSES)


@pytest.mark.parametrize(("text", "match"), [
    ("classes: [a]\ntrain: []\nval: [{root: x}]\n", "'train' must list at least one data set"),
    ("classes: [a]\ntrain: [{root: x, inputs: [depth]}]\nval: [{root: x}]\n", "unknown input 'depth'"),
    ("classes: [a]\ntrain: [{root: x, inputs: ['fused:magic']}]\nval: [{root: x}]\n", "unknown fusion variant 'magic'"),
    ("classes: [a]\ntrain: [{root: x, inputs: ['ir:max']}]\nval: [{root: x}]\n", "unknown input 'ir:max'"),
    ("classes: a\ntrain: [{root: x}]\nval: [{root: x}]\n", "'classes' must be a list"),
    ("classes: [a]\ntrain: [{root: x}]\nval: [{root: x}]\ntest: []\n", r"unknown key\(s\) \['test'\]"),
    ("[1, 2", "cannot read"),
    ("classes: [a]\ntrain: [{root: x, repeat: 0}]\nval: [{root: x}]\n", "repeat must be a positive integer"),
    ("classes: [a]\ntrain: [{root: x, weight: 2}]\nval: [{root: x}]\n", r"unknown key\(s\) \['weight'\]"),
    ("classes: [a]\ntrain: [{root: x}]\nval: [{root: x, repeat: 2}]\n", "repeat is for training sets"),
])
def test_data_file_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_data_file(path)
    with pytest.raises(ConfigError, match="file not found"):
        read_data_file(tmp_path / "missing.yaml")


def _planted(n: int, seed: int, size: tuple[int, int] = (128, 96)) -> DetectionSet:
    """Grey noise with bright tall 'persons' (class 0) and dimmer wide 'cars' (class 1)."""
    rng = np.random.default_rng(seed)
    w_img, h_img = size
    out = []
    for i in range(n):
        img = rng.integers(20, 60, (h_img, w_img), dtype=np.uint8)
        boxes, cls = [], []
        for _ in range(int(rng.integers(1, 3))):
            if rng.random() < 0.5:
                w, h, c, v = int(rng.integers(12, 18)), int(rng.integers(30, 44)), 0, 230
            else:
                w, h, c, v = int(rng.integers(36, 50)), int(rng.integers(14, 20)), 1, 150
            x, y = int(rng.integers(0, w_img - w)), int(rng.integers(0, h_img - h))
            img[y:y + h, x:x + w] = v
            boxes.append([x, y, x + w, y + h])
            cls.append(c)
        out.append(DetSample(f"s{i}", "ir", np.repeat(img[:, :, None], 3, 2), np.array(boxes, np.float32),
                             np.array(cls, np.int64)))
    return DetectionSet(out)


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_augmented_boxes_stay_on_their_objects(mosaic: float) -> None:
    data = _planted(8, 0)
    aug = Augment(128, 96, mosaic=mosaic, photometric=0.0)
    rng = np.random.default_rng(1)
    seen = 0
    for k in range(40):
        img, boxes, cls = aug(rng, data.samples, k % 8)
        assert img.shape == (96, 128, 3) and len(boxes) == len(cls)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
        for b, c in zip(boxes, cls, strict=True):
            x1, y1, x2, y2 = np.round(b).astype(int)
            inner = img[y1 + 1:y2 - 1, x1 + 1:x2 - 1, 0]
            if inner.size:
                # inside a box: the object's level (230 person, 150 car), not noise (20-60) or padding (114)
                assert np.median(inner) >= (200 if c == 0 else 130), (k, b, c)
                seen += 1
    assert seen > 40


def test_simota_gives_every_object_anchors_near_it() -> None:
    torch.manual_seed(0)
    net = YoloxNano(("person", "car"))
    x = torch.rand(1, 3, 96, 128)
    grid, strides = net.grid(96, 128, torch.device("cpu"))
    raw = net.raw(x).detach()
    from ivfusion_ros.detect.nets.yolox_loss import pred_boxes

    gt = torch.tensor([[10.0, 10.0, 30.0, 60.0], [60.0, 40.0, 120.0, 70.0]])
    fg, matched, iou = DetectionLoss(2).assign(raw[0], pred_boxes(raw, grid, strides)[0], grid, strides, gt,
                                               torch.tensor([0, 1]))
    assert set(matched.tolist()) == {0, 1} and len(fg) == len(set(fg.tolist()))  # each anchor one object
    centers = (grid[fg] + 0.5) * strides[fg, None]
    for c, m in zip(centers, matched, strict=True):
        g = gt[m]
        r = 2.5 * strides[fg][0]
        assert g[0] - r <= c[0] <= g[2] + r and g[1] - r <= c[1] <= g[3] + r
    assert ((iou >= 0) & (iou <= 1)).all()


def test_training_lowers_the_loss_and_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path: Path) -> None:
    """From random weights the loss falls; stopped after epoch 2 and resumed, a run ends with exactly the weights,
    EMA and history of the run that was never interrupted (same batches, optimizer and schedule state)."""
    data = (("person", "car"), _planted(40, 0), _planted(4, 1))
    kw = dict(epochs=4, batch=8, lr=3e-3, warmup_steps=5, input_size=[128, 96], mosaic=0.0)
    whole = train_detector(DetectorTrainConfig(out=str(tmp_path / "whole"), **kw), data=data)
    loss = [r["loss"] for r in whole.history]
    assert loss[-1] < 0.95 * loss[0], loss

    cfg = DetectorTrainConfig(out=str(tmp_path / "parts"), **kw)
    first = train_detector(cfg, data=data, stop_after=2)
    assert first.epochs == 2 and first.checkpoint.is_file() and first.weights.is_file()
    resumed = train_detector(cfg, resume=first.checkpoint, data=data)
    rows = list(csv.DictReader(resumed.csv.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    a = torch.load(whole.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    for key in ("net", "ema"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
    assert [r["loss"] for r in b["history"]] == [r["loss"] for r in a["history"]]
    assert resumed.weights.is_file() and resumed.onnx.is_file()


SHIPPED_PT = Path(__file__).resolve().parents[2] / "ivfusion_ros" / "detect" / "weights" / "ivdet-n.pt"


@pytest.mark.skipif(not SHIPPED_PT.is_file(), reason="shipped detector weights not built yet")
def test_fine_tuning_learns_planted_boxes(tmp_path: Path) -> None:
    """Fine-tuning the shipped detector (what a user does with their own data): validation mAP on planted boxes,
    near chance before, rises well above it."""
    from ivfusion_ros.detect.ivdet import load_detector_weights, save_detector_weights
    from ivfusion_ros.train.detector_trainer import validate_detector

    net, _ = load_detector_weights(SHIPPED_PT)
    init = save_detector_weights(net, tmp_path / "init.pt", (128, 96))
    data = (CLASSES, _planted(48, 0), _planted(16, 1))
    before = validate_detector(net, data[2].samples, (128, 96))["map50"]
    cfg = DetectorTrainConfig(out=str(tmp_path / "run"), init=str(init), epochs=6, batch=8, lr=2e-3,
                              warmup_steps=5, input_size=[128, 96], mosaic=0.0)
    result = train_detector(cfg, data=data)
    assert result.best["val_map50"] > max(0.3, before + 0.2), (before, result.best)


def test_init_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="--init: file not found"):
        build_network(DetectorTrainConfig(init=str(tmp_path / "none.onnx")), CLASSES)
    with pytest.raises(ConfigError, match="--init-class-ids has 3 ids for 2 classes"):
        build_network(DetectorTrainConfig(init=str(tmp_path / "none.onnx")), ("a", "b"))
    from ivfusion_ros.detect.ivdet import save_detector_weights

    path = save_detector_weights(YoloxNano(("person", "dog")), tmp_path / "d.pt", (64, 64))
    with pytest.raises(ConfigError, match=r"its classes \['person', 'dog'\] differ from the data's"):
        build_network(DetectorTrainConfig(init=str(path)), CLASSES)
    with pytest.raises(ConfigError, match="--input-size 100x96: both sides must be positive multiples of 32"):
        DetectorTrainConfig(input_size=[100, 96]).check()


def test_cli_trains_writes_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ivfusion_ros.cli.main import app

    _write_set(tmp_path / "s", n=2)
    data = _data_yaml(tmp_path, "  - {root: s, inputs: [fused, ir]}", "  - {root: s, inputs: [fused]}")
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["train-detector", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch",
                              "2", "--input-size", "64x64", "--threads", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "train: 4 images" in res.output and "best epoch 1" in res.output
    assert {p.name for p in out.iterdir()} >= {"last.pt", "metrics.csv", "best.pt", "best.onnx"}
    res = runner.invoke(app, ["train-detector", "--data", str(tmp_path / "nope.yaml"), "--out", str(out)])
    assert res.exit_code == 1 and "error: --data: file not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train-detector", "--data", str(data), "--out", str(out), "--input-size", "64"])
    assert res.exit_code == 1 and "--input-size expects WxH" in res.output
