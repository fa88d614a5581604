"""``--guide-detector``: the package's detector in AMFusion (DSFM guidance) and TSJNet (joint-driven detection loss)
training, through the library and the CLI, and its one-line errors. The bilevel (t2p) use is in
``test_t2p_training.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train.tiny_detector import random_detector, save_random_detector, write_labelled_pairs
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.detect.ivdet import load_detector_weights
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.fusion import FusionContext, create_fuser
from ivfusion_ros.fusion.nets import create_net
from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights
from ivfusion_ros.train import TrainConfig, load_pairs, train
from ivfusion_ros.train.fused_detection import DetectionTask, load_labelled_pairs

AMF = {"channels": [4, 8, 8], "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "idfm_hidden": 4}
TSJ = {"channels": [4, 8], "heads": 2, "kernel": 3, "att_groups": 2, "se_reduction": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(pair_dir: Path, out: Path, det_file: Path, **kw: object) -> TrainConfig:
    base = dict(variant="amfusion-s", data=[str(pair_dir)], out=str(out), epochs=1, steps=2, batch=2, crop=32,
                lr=5e-3, seed=3, val_pairs=1, net=dict(AMF), device="cpu", guide_detector=str(det_file))
    base.update(kw)
    return TrainConfig(**base)


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, ["train", "--epochs", "1", "--steps", "1", "--batch", "2", "--crop", "32",
                                    "--val-pairs", "0", "--threads", "1", "--device", "cpu", *args])


# --- AMFusion: DSFM guidance ----------------------------------------------------------------------------------------


def test_amfusion_training_is_guided_and_the_weights_run_without_the_detector(pair_dir: Path, det_file: Path,
                                                                              tmp_path: Path) -> None:
    res = train(_cfg(pair_dir, tmp_path, det_file))
    wf = load_weights(res.weights, families=("amfusion",))
    assert wf.config["guide"] == "yolox-nano" and wf.config["guide_channels"] == 64
    assert wf.meta["guide_detector"] == {"file": str(det_file), "classes": ["person", "bicycle", "car"],
                                         "use": "DSFM guidance"}
    # the backbone trained nothing: the weights file carries the detector's stride-8 stages unchanged
    det, _ = load_detector_weights(det_file)
    for k, v in det.backbone.state_dict().items():
        if k.split(".")[0] in ("stem", "dark2", "dark3"):
            torch.testing.assert_close(wf.state_dict[f"det_guide.{k}"], v)
    assert not any(k.startswith("det_guide.dark4") for k in wf.state_dict)
    # ... and the trained network's output depends on it (DSFM attends to its 64 channels)
    net = build_from_weights(wf).eval()
    assert net.dsfm.kv.weight.shape[1] == 64
    x = [torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    with torch.no_grad():
        before = net(*x)
        net.det_guide.dark3[0].pconv.conv.weight.mul_(-1.0)
        assert float((net(*x) - before).abs().max()) > 0
    # the fusion variant runs the file alone (the detector file may be gone) and says it is guided
    det_file_bytes = det_file.read_bytes()
    moved = tmp_path / "elsewhere.pt"
    det_file.rename(moved)
    try:
        fuser = create_fuser("amfusion", weights=str(res.weights))
        out = fuser.fuse(torch.rand(1, 1, 30, 44), torch.rand(1, 3, 30, 44),
                         FusionContext(torch.full((1, 1, 30, 44), 0.2), torch.zeros(1, 1, 30, 44)))
    finally:
        moved.rename(det_file)
    assert det_file.read_bytes() == det_file_bytes
    assert out.shape == (1, 3, 30, 44) and "detector-guided" in fuser.describe()


def test_amfusion_resume_reloads_the_guide(pair_dir: Path, det_file: Path, tmp_path: Path) -> None:
    """The checkpoint's config names the detector, so a resumed run is guided like the interrupted one."""
    full = train(_cfg(pair_dir, tmp_path / "full", det_file, epochs=2, val_pairs=0))
    part = _cfg(pair_dir, tmp_path / "part", det_file, epochs=2, val_pairs=0)
    train(part, stop_after=1)
    res = train(TrainConfig(epochs=2, out=str(tmp_path / "part")), resume=tmp_path / "part" / "last.pt")
    a, b = load_weights(full.weights).state_dict, load_weights(res.weights).state_dict
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- TSJNet: the joint-driven detection loss ------------------------------------------------------------------------


def test_tsjnet_detection_task_trains_fusion_not_detector(pair_dir: Path) -> None:
    """The hook's loss is the detector's on the fused batch against this batch's boxes; its gradient reaches the
    fusion network and stops at the frozen detector."""
    det = random_detector()
    task = DetectionTask(det)
    torch.manual_seed(0)
    net = create_net("tsjnet-s", **TSJ).train().attach_tasks(detection=task)
    data = load_labelled_pairs([str(pair_dir)], class_names=det.class_names)
    p0, p3 = data.pairs[0], data.pairs[3]  # whole 64x72 images: a person and a car; no label file
    assert len(p0.boxes) == 2 and p0.labelled and not p3.labelled
    ir = torch.from_numpy(np.stack((p0.ir, p3.ir)))[:, None]
    vis = torch.from_numpy(np.stack((p0.vis, p3.vis)))[:, None]
    boxes = [(p0.boxes, p0.classes), (p3.boxes, p3.classes)]
    labelled = torch.tensor([True, False])
    with pytest.raises(RuntimeError, match="set_batch"):
        net(ir, vis, ir, vis)
    task.set_batch(boxes, labelled)
    fused = net(ir, vis, torch.zeros_like(ir), torch.zeros_like(ir))
    loss = net.aux_losses["detection"]
    assert float(loss.detach()) > 0 and task.terms["iou"] > 0  # both objects were assigned anchors
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and float(sum(g.abs().sum() for g in grads)) > 0
    assert all(p.grad is None and not p.requires_grad for p in det.parameters())
    # the boxes matter: the same fused batch with no objects in it is another loss
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)) for _ in boxes]
    task.set_batch(empty, labelled)
    assert float(task(fused.detach())) < float(loss.detach())


def test_tsjnet_training_with_guide_detector(pair_dir: Path, det_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(pair_dir, tmp_path, det_file, variant="tsjnet-s", net=dict(TSJ), epochs=2, val_pairs=0)
    res = train(cfg)
    assert all(r["detection"] > 0 for r in res.history)
    wf = load_weights(res.weights, families=("tsjnet",))
    assert wf.meta["loss_weights"]["detection"] == 0.1  # the default weight, recorded
    assert wf.meta["guide_detector"]["use"] == "detection loss"
    assert wf.state_dict.keys() == create_net("tsjnet-s", **TSJ).state_dict().keys()  # no detector in them
    with pytest.raises(ConfigError, match="labelled pairs"):
        train(_cfg(pair_dir, tmp_path / "x", det_file, variant="tsjnet-s", net=dict(TSJ)),
              data=load_pairs(str(pair_dir), min_side=32))


# --- CLI ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["amfusion-s", "tsjnet-s"])
def test_cli_guide_detector_end_to_end(pair_dir: Path, det_file: Path, tmp_path: Path, variant: str) -> None:
    r = _cli("--variant", variant, "--data", str(pair_dir), "--out", str(tmp_path), "--guide-detector", str(det_file),
             "--det-weight", "0.3")
    assert r.exit_code == 0, r.output
    wf = load_weights(tmp_path / f"{variant}.pt")
    assert wf.meta["guide_detector"]["file"] == str(det_file)
    if variant == "amfusion-s":
        assert wf.config["guide"] == "yolox-nano"
    else:
        assert wf.meta["loss_weights"]["detection"] == 0.3
        assert "detection" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    return path


@pytest.mark.parametrize(("variant", "det", "message"), [
    ("amfusion-s", "missing", "detector weights not found: {det}"),
    ("tsjnet-s", "corrupt", "cannot read detector weights {det}"),
    ("ldfusion-s", "ok", "ldfusion-s (ldfusion) has no use for a detector"),
    ("t2p-s", "ok", "use it with --bilevel"),
])
def test_cli_guide_detector_errors_are_one_line(pair_dir: Path, det_file: Path, tmp_path: Path, variant: str,
                                                det: str, message: str) -> None:
    path = {"missing": tmp_path / "nope.pt", "corrupt": _corrupt(tmp_path), "ok": det_file}[det]
    r = _cli("--variant", variant, "--data", str(pair_dir), "--out", str(tmp_path / "o"), "--guide-detector", str(path))
    assert r.exit_code == 1
    text = "".join(r.output.split())  # the console wraps long lines (and paths)
    assert "".join(message.format(det=path).split()) in text and "Traceback" not in r.output
    assert not (tmp_path / "o" / f"{variant}.pt").exists()


def test_cli_labels_with_classes_the_detector_lacks(tmp_path: Path) -> None:
    pairs = write_labelled_pairs(tmp_path / "pairs", label_classes=("person", "dog", "truck"))
    det = save_random_detector(tmp_path / "det.pt")
    r = _cli("--variant", "tsjnet-s", "--data", str(pairs), "--out", str(tmp_path / "o"), "--guide-detector", str(det))
    assert r.exit_code == 1
    text = "".join(r.output.split())
    assert "classes.txt" in text and "['truck']" in text and str(det) in text


def test_cli_net_options_reach_the_network_and_bad_ones_are_one_line(pair_dir: Path, tmp_path: Path) -> None:
    r = _cli("--variant", "tsjnet-s", "--data", str(pair_dir), "--out", str(tmp_path / "o"),
             "--net", "detail_skip=true", "--net", "channels=[4, 8]")
    assert r.exit_code == 0, r.output
    wf = load_weights(tmp_path / "o" / "tsjnet-s.pt", families=("tsjnet",))
    assert wf.config["detail_skip"] is True and list(wf.config["channels"]) == [4, 8]
    for bad, why in (("detail_skip", "KEY=VALUE"), ("no_such_option=1", "bad configuration")):
        r = _cli("--variant", "tsjnet-s", "--data", str(pair_dir), "--out", str(tmp_path / "b"), "--net", bad)
        assert r.exit_code != 0 and why in r.output and "Traceback" not in r.output, r.output
