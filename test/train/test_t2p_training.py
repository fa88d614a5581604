"""t2p training: plain training with the commitment term, bilevel alternation with the package's detector (YOLOX
fine-tuned on fused images in the lower level, its loss in the upper level), the variant and ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train.tiny_detector import changed, random_detector, save_random_detector, snapshot
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.detect.ivdet import load_detector_weights
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion import FusionContext, create_fuser
from ivfusion_ros.fusion.nets import create_net
from ivfusion_ros.fusion.nets.losses import create_loss
from ivfusion_ros.fusion.nets.weights import load_weights, save_weights
from ivfusion_ros.train import TrainConfig, train
from ivfusion_ros.train.bilevel import (
    BilevelConfig,
    bilevel_step,
    inner_step,
    load_labelled_pairs,
    outer_step,
    train_bilevel,
    tuned_parameters,
)
from ivfusion_ros.train.fused_detection import FusedDetectionLoss, to_targets

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"channels": [4, 8, 8], "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "gate_hidden": 4, "codebook_size": 8,
        "prompts": ["night street, highlight pedestrians"]}


def _cfg(pair_dir: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(variant="t2p-s", data=[str(pair_dir)], out=str(out), epochs=2, steps=3, batch=2, crop=32, lr=5e-3,
                seed=7, val_pairs=0, net=dict(TINY), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_the_loss_and_logs_commitment(pair_dir: Path, tmp_path: Path) -> None:
    # without the glare term (whether a 32-pixel crop holds a light effect swings the epoch mean; it has its own test)
    res = train(_cfg(pair_dir, tmp_path, epochs=4, steps=5, val_pairs=1, loss={"glare": 0.0}))
    # the image terms: the codebook usage term moves with the restarts of a tiny 8-code book, not with learning
    image = [sum(r[k] for k in ("intensity", "gradient", "ssim", "illumination")) for r in res.history]
    assert image[-1] < image[0]
    assert "commitment" in res.history[0] and "commitment" in res.csv.read_text().splitlines()[0]
    # the collapse diagnostics are logged per epoch: codebook perplexity, gate statistics, distance from max
    header = res.csv.read_text().splitlines()[0].split(",")
    for col in ("perplexity", "restarted", "gate_mean", "gate_std", "gate_saturated", "val_dmax"):
        assert col in header, col
    row = res.history[-1]
    assert 1.0 <= row["perplexity"] <= TINY["codebook_size"] and 0.0 <= row["gate_mean"] <= 1.0
    assert row["val_dmax"] > 0.0
    wf = load_weights(res.weights, families=("t2p",))
    assert wf.config["prompts"] == TINY["prompts"] and "text_emb" in wf.state_dict
    assert bool(wf.state_dict["vq.initialized"])  # the codebook was initialised from the data and saved


# --- bilevel --------------------------------------------------------------------------------------------------------


def _tiny_setup(seed: int = 0) -> tuple[torch.nn.Module, FusedDetectionLoss, torch.optim.Optimizer,
                                        torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = create_net("t2p-s", **TINY).train()
    detector = random_detector(seed).train()
    opt_det = torch.optim.SGD(tuned_parameters(detector, "head"), lr=0.01)
    return net, FusedDetectionLoss(detector), torch.optim.SGD(net.parameters(), lr=0.1), opt_det


def _batch() -> tuple[list[torch.Tensor], list[tuple[np.ndarray, np.ndarray]], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = [torch.rand(2, 1, 32, 32, generator=g) for _ in range(4)]
    boxes = [(np.array([[4.0, 4.0, 20.0, 28.0]], np.float32), np.array([0])), (np.zeros((0, 4), np.float32),
                                                                               np.zeros(0, np.int64))]
    return x, boxes, torch.tensor([True, True])


def test_inner_updates_only_the_detector_head_outer_only_the_fusion_net() -> None:
    net, det, opt_net, opt_det = _tiny_setup()
    x, boxes, labelled = _batch()
    targets = to_targets(boxes, torch.device("cpu"))
    fused = net(*x)
    n0, d0 = snapshot(net), snapshot(det.detector)
    inner_step(det, opt_det, fused, targets, labelled)
    assert changed(det.detector, d0, "head.") and not changed(net, n0)
    assert changed(det.detector, d0) == changed(det.detector, d0, "head.")  # backbone and neck stay pretrained
    assert all(p.grad is None for p in net.parameters())  # the fused image was detached
    n1, d1 = snapshot(net), snapshot(det.detector)
    fus, _ = create_loss("t2p")(x[0], x[1], fused, x[2], x[3], net.aux_losses)
    outer_step(det, opt_net, fused, fus, targets, labelled, det_weight=1.0)
    assert changed(net, n1) and not changed(det.detector, d1)
    assert all(p.requires_grad for p in det.detector.head.parameters())  # unfrozen again for the next inner step
    assert not any(p.requires_grad for p in det.detector.backbone.parameters())


def test_tune_all_fits_the_whole_detector() -> None:
    net, det, _, _ = _tiny_setup()
    opt = torch.optim.SGD(tuned_parameters(det.detector, "all"), lr=0.01)
    x, boxes, labelled = _batch()
    before = snapshot(det.detector)
    inner_step(det, opt, net(*x), to_targets(boxes, torch.device("cpu")), labelled)
    assert changed(det.detector, before, "backbone.") and changed(det.detector, before, "head.")
    with pytest.raises(ConfigError, match="tune"):
        tuned_parameters(det.detector, "neck")


def test_bilevel_step_alternates_detector_then_net() -> None:
    net, det, opt_net, opt_det = _tiny_setup()
    order: list[str] = []
    for name, opt in (("detector", opt_det), ("net", opt_net)):
        step = opt.step
        opt.step = lambda *a, _n=name, _s=step, **k: (order.append(_n), _s(*a, **k))[1]  # type: ignore[method-assign]
    x, boxes, labelled = _batch()
    vals = bilevel_step(net, det, opt_net, opt_det, create_loss("t2p"), *x, boxes, labelled, det_weight=0.5,
                        inner_steps=2)
    assert order == ["detector", "detector", "net"]
    assert {"loss", "detection", "det_inner", "commitment", "ssim"} <= set(vals)
    assert vals["detection"] > 0 and vals["det_inner"] > 0


def test_detection_loss_gradient_reaches_the_fusion_net_not_the_frozen_detector() -> None:
    """Detection is the point of the outer level: the YOLOX loss alone gives the fusion net a gradient."""
    net, det, _, _ = _tiny_setup()
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    det.detector.requires_grad_(False)
    x, boxes, labelled = _batch()
    loss, terms = det(net(*x), to_targets(boxes, torch.device("cpu")), labelled)
    loss.backward()
    assert terms["iou"] > 0  # the person box was assigned anchors
    assert float(sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None)) > 0
    assert all(p.grad is None for p in det.detector.parameters())


def test_unlabelled_samples_do_not_count() -> None:
    net, det, _, opt_det = _tiny_setup()
    x, boxes, _ = _batch()
    fused = net(*x)
    targets = to_targets(boxes, torch.device("cpu"))
    none = torch.tensor([False, False])
    loss, _ = det(fused, targets, none)
    assert float(loss.detach()) == 0.0 and loss.requires_grad  # still a valid graph for the outer step
    before = snapshot(det.detector)
    assert inner_step(det, opt_det, fused, targets, none) == 0.0 and not changed(det.detector, before)
    # only the labelled sample's image reaches the detector: the loss equals that of the sample alone
    one = torch.tensor([True, False])
    with torch.no_grad():
        alone, _ = det(fused[:1], targets[:1], torch.tensor([True]))
        mixed, _ = det(fused, targets, one)
    torch.testing.assert_close(mixed, alone)


def test_labelled_pairs_map_classes_by_name(pair_dir: Path, tmp_path: Path) -> None:
    data = load_labelled_pairs([str(pair_dir)], min_side=32, class_names=("person", "bicycle", "car"))
    assert [p.labelled for p in data.pairs] == [True, True, True, False]
    assert data.pairs[0].classes.tolist() == [0, 2]  # person, car: the detector's own indices
    ir, vis, boxes, labelled = data.sample(np.random.default_rng(0), 6, 32)
    assert ir.shape == vis.shape == (6, 1, 32, 32) and labelled.dtype == torch.bool
    for bx, _ in boxes:
        assert (bx >= 0).all() and (bx <= 32).all()
    assert sum(len(b) for b, _ in boxes) > 0
    other = load_labelled_pairs([str(pair_dir)], class_names=("car", "person"))  # by name, not by position
    assert other.pairs[0].classes.tolist() == [1, 0]
    with pytest.raises(ConfigError, match=r"classes\.txt.*\['car'\].*det\.pt"):
        load_labelled_pairs([str(pair_dir)], class_names=("person", "bicycle"), detector="det.pt")


def test_bilevel_training_fine_tunes_the_detector_and_records(pair_dir: Path, det_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(pair_dir, tmp_path, epochs=2, steps=2, guide_detector=str(det_file))
    res = train_bilevel(cfg, BilevelConfig(det_weight=0.5, det_lr=1e-3))
    wf = load_weights(res.weights, families=("t2p",))
    assert wf.meta["bilevel"]["det_weight"] == 0.5 and wf.meta["training_data"][0]["labelled"] == 3
    assert wf.meta["guide_detector"]["file"] == str(det_file)
    assert wf.meta["bilevel"]["classes"] == ["person", "bicycle", "car"]
    assert "detection" in res.csv.read_text().splitlines()[0]
    assert all(r["detection"] > 0 for r in res.history)
    tuned, header = load_detector_weights(res.checkpoint)  # a detector file ivdet loads
    start, _ = load_detector_weights(det_file)
    assert header["class_names"] == ["person", "bicycle", "car"] and header["input_size"] == [64, 64]
    assert changed(tuned, snapshot(start), "head.")
    assert not [k for k in changed(tuned, snapshot(start)) if not k.startswith("head.")]


def test_bilevel_amfusion_is_also_dsfm_guided(pair_dir: Path, det_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(pair_dir, tmp_path, variant="amfusion-s", epochs=1, steps=1, guide_detector=str(det_file),
               net={"channels": [4, 8, 8], "kv_pool": 2, "idfm_hidden": 4})
    res = train_bilevel(cfg, BilevelConfig(tune="all", det_lr=1e-2))
    wf = load_weights(res.weights)
    assert wf.config["guide"] == "yolox-nano" and "DSFM" in wf.meta["guide_detector"]["use"]
    start, _ = load_detector_weights(det_file)
    tuned, _ = load_detector_weights(res.checkpoint)
    # the guide is the detector as it was; the lower level fine-tuned its own copy
    torch.testing.assert_close(wf.state_dict["det_guide.stem.conv.weight"], start.backbone.stem.conv.weight)
    assert not torch.equal(tuned.backbone.stem.conv.weight, start.backbone.stem.conv.weight)


def test_cli_bilevel_and_prompt_options(pair_dir: Path, det_file: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--variant", "t2p-s", "--data", str(pair_dir), "--out", str(tmp_path),
                                 "--epochs", "1", "--steps", "1", "--batch", "1", "--crop", "32", "--val-pairs", "0",
                                 "--threads", "1", "--device", "cpu", "--bilevel", "--text-encoder", "hash:16",
                                 "--prompt", "pedestrians", "--prompt", "vehicles", "--guide-detector", str(det_file)])
    assert r.exit_code == 0, r.output
    wf = load_weights(tmp_path / "t2p-s.pt")
    assert wf.config["prompts"] == ["pedestrians", "vehicles"] and wf.config["text_source"] == "hash:16"
    assert "bilevel" in wf.meta and "fine-tuned detector" in r.output
    assert (tmp_path / "detector.pt").is_file()
    # the fine-tuned detector runs as ivdet on the default backend (ONNX Runtime, which loads the .onnx beside it)
    from ivfusion_ros.config import DetectorConfig
    from ivfusion_ros.detect import create_detector

    det = create_detector(DetectorConfig(type="ivdet", model=str(tmp_path / "detector.pt")))
    assert det.detect(np.zeros((40, 48, 3), np.uint8)).class_names == det.class_names


def test_bilevel_defaults_to_the_shipped_detector(pair_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --guide-detector the lower level is the shipped detector; where it is absent, the error says what
    to give instead."""
    import ivfusion_ros.detect.ivdet as ivdet

    monkeypatch.setattr(ivdet, "shipped_model", lambda backend: tmp_path / "ivdet-n.pt")
    with pytest.raises(ModelError, match=r"shipped detector .*ivdet-n\.pt is missing.*--guide-detector"):
        train_bilevel(_cfg(pair_dir, tmp_path / "o", epochs=1, steps=1), BilevelConfig())
    save_random_detector(tmp_path / "ivdet-n.pt")
    res = train_bilevel(_cfg(pair_dir, tmp_path / "o", epochs=1, steps=1), BilevelConfig())
    assert load_weights(res.weights).meta["guide_detector"]["file"] == str(tmp_path / "ivdet-n.pt")


@pytest.mark.parametrize("what", ["missing", "corrupt"])
def test_cli_bilevel_bad_detector_file_is_one_line(pair_dir: Path, tmp_path: Path, what: str) -> None:
    det = tmp_path / "det.pt"
    if what == "corrupt":
        det.write_bytes(b"not a torch file")
    r = CliRunner().invoke(app, ["train", "--variant", "t2p-s", "--data", str(pair_dir), "--out", str(tmp_path / "o"),
                                 "--epochs", "1", "--steps", "1", "--crop", "32", "--device", "cpu", "--bilevel",
                                 "--guide-detector", str(det)])
    assert r.exit_code == 1
    assert "--guide-detector" in r.output and "det.pt" in r.output and "Traceback" not in r.output


# --- the variant and ONNX -------------------------------------------------------------------------------------------


def test_t2p_variant_runs_trained_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = save_weights(tmp_path / "w.pt", create_net("t2p-s", **TINY))
    fuser = create_fuser("t2p", weights=str(path))
    rgb = torch.rand(1, 3, 30, 44)
    ir = torch.rand(1, 1, 30, 44)
    ctx = FusionContext(torch.full((1, 1, 30, 44), 0.2), torch.zeros(1, 1, 30, 44))
    out = fuser.fuse(ir, rgb, ctx)
    assert out.shape == (1, 3, 30, 44) and "text-guided" in fuser.describe()
    amf = save_weights(tmp_path / "a.pt", create_net("amfusion-s", channels=[4, 8, 8]))
    with pytest.raises(ModelError, match="t2p"):
        create_fuser("t2p", weights=str(amf))


def test_onnx_export_parity_and_cached_prompts(tmp_path: Path) -> None:
    """The exported graph holds the prompt embeddings: same output as torch, and not that of other prompts."""
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install '.[dev]')")
    from ivfusion_ros.runtime.export import PARITY_TOL, export_onnx
    from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

    torch.manual_seed(0)
    net = create_net("t2p-s", **TINY).eval()
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    res = export_onnx(net, tmp_path / "t2p.onnx", exporter="torchscript")
    assert max(res.max_abs_diff.values()) < PARITY_TOL
    other = create_net("t2p-s", **{**TINY, "prompts": ["daylight, keep colours"]}).eval()
    other.load_state_dict({k: v for k, v in net.state_dict().items() if k != "text_emb"}, strict=False)
    g = torch.Generator().manual_seed(5)
    x = [torch.rand(1, 1, 40, 56, generator=g) for _ in range(4)]
    got = OnnxNetRunner(res.path)(*x)
    with torch.no_grad():
        torch.testing.assert_close(got, net(*x), atol=PARITY_TOL, rtol=0)
        assert float((got - other(*x)).abs().max()) > 1e-3
    assert res.header["config"]["prompts"] == TINY["prompts"]
