"""t2p training: plain training with the commitment term, bilevel alternation, the variant and ONNX export."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion import FusionContext, create_fuser
from ivfusion_ros.fusion.nets import create_net
from ivfusion_ros.fusion.nets.losses import create_loss
from ivfusion_ros.fusion.nets.weights import load_weights, save_weights
from ivfusion_ros.train import TrainConfig, train
from ivfusion_ros.train.bilevel import (
    BilevelConfig,
    TinyDetHead,
    bilevel_step,
    detection_loss,
    detection_targets,
    inner_step,
    load_labelled_pairs,
    outer_step,
    train_bilevel,
)

TINY = {"channels": [4, 8, 8], "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "gate_hidden": 4, "codebook_size": 8,
        "prompts": ["night street, highlight pedestrians"]}


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four generated night pairs (64x72) with warm figures, YOLO labels for three of them (one car)."""
    root = tmp_path_factory.mktemp("t2p_pairs")
    for d in ("ir", "vi", "labels"):
        (root / d).mkdir()
    (root / "labels" / "classes.txt").write_text("person\nbicycle\ncar\n")
    rng = np.random.default_rng(0)
    for i in range(4):
        vis = np.full((64, 72, 3), 15 + 10 * i, np.uint8)
        vis[:, 40:] = 120
        vis = np.clip(vis + rng.integers(-8, 9, vis.shape), 0, 255).astype(np.uint8)
        ir = np.full((64, 72), 70, np.uint8)
        x0 = 10 + 5 * i
        ir[20:50, x0:x0 + 12] = 210
        ir = np.clip(ir + rng.integers(-5, 6, ir.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{i:02d}.png"), vis)
        if i < 3:
            lines = [f"0 {(x0 + 6) / 72:.4f} {35 / 64:.4f} {12 / 72:.4f} {30 / 64:.4f}"]
            if i == 0:
                lines.append(f"2 {55 / 72:.4f} {50 / 64:.4f} {14 / 72:.4f} {8 / 64:.4f}")
            (root / "labels" / f"{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return root


def _cfg(pair_dir: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(variant="t2p-s", data=[str(pair_dir)], out=str(out), epochs=2, steps=3, batch=2, crop=32, lr=5e-3,
                seed=7, val_pairs=0, net=dict(TINY), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_the_loss_and_logs_commitment(pair_dir: Path, tmp_path: Path) -> None:
    res = train(_cfg(pair_dir, tmp_path, epochs=4, steps=5))
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < losses[0]
    assert "commitment" in res.history[0] and "commitment" in res.csv.read_text().splitlines()[0]
    wf = load_weights(res.weights, families=("t2p",))
    assert wf.config["prompts"] == TINY["prompts"] and "text_emb" in wf.state_dict
    assert bool(wf.state_dict["vq.initialized"])  # the codebook was initialised from the data and saved


# --- bilevel --------------------------------------------------------------------------------------------------------


def _tiny_setup(seed: int = 0) -> tuple[torch.nn.Module, TinyDetHead, torch.optim.Optimizer, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = create_net("t2p-s", **TINY).train()
    head = TinyDetHead(width=4).train()
    return net, head, torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(head.parameters(), lr=0.1)


def _batch() -> tuple[list[torch.Tensor], list[tuple[np.ndarray, np.ndarray]], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = [torch.rand(2, 1, 32, 32, generator=g) for _ in range(4)]
    boxes = [(np.array([[4.0, 4.0, 20.0, 28.0]], np.float32), np.array([0])), (np.zeros((0, 4), np.float32),
                                                                               np.zeros(0, np.int64))]
    return x, boxes, torch.tensor([True, True])


def _snap(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _changed(m: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in m.named_parameters())


def test_inner_updates_only_the_head_outer_only_the_fusion_net() -> None:
    net, head, opt_net, opt_head = _tiny_setup()
    x, boxes, labelled = _batch()
    targets = detection_targets(boxes, 2, 8, 8)
    fused = net(*x)
    n0, h0 = _snap(net), _snap(head)
    inner_step(head, opt_head, fused, targets, labelled)
    assert _changed(head, h0) and not _changed(net, n0)
    assert all(p.grad is None for p in net.parameters())  # the fused image was detached
    n1, h1 = _snap(net), _snap(head)
    fus, _ = create_loss("t2p")(x[0], x[1], fused, x[2], x[3], net.aux_losses)
    outer_step(head, opt_net, fused, fus, targets, labelled, det_weight=1.0)
    assert _changed(net, n1) and not _changed(head, h1)
    assert all(p.requires_grad for p in head.parameters())  # unfrozen again for the next inner step


def test_bilevel_step_alternates_head_then_net() -> None:
    net, head, opt_net, opt_head = _tiny_setup()
    order: list[str] = []
    for name, opt in (("head", opt_head), ("net", opt_net)):
        step = opt.step
        opt.step = lambda *a, _n=name, _s=step, **k: (order.append(_n), _s(*a, **k))[1]  # type: ignore[method-assign]
    x, boxes, labelled = _batch()
    vals = bilevel_step(net, head, opt_net, opt_head, create_loss("t2p"), *x, boxes, labelled, det_weight=0.5,
                        inner_steps=2)
    assert order == ["head", "head", "net"]
    assert {"loss", "detection", "det_inner", "commitment", "ssim"} <= set(vals)


def test_detection_loss_outer_gradient_reaches_the_fusion_net() -> None:
    """Detection is the point of the outer level: its loss alone gives the fusion net a gradient."""
    net, head, _, _ = _tiny_setup()
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, boxes, labelled = _batch()
    det = detection_loss(*head(net(*x)), detection_targets(boxes, 2, 8, 8), labelled)
    det.backward()
    assert float(sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None)) > 0


def test_detection_targets_and_unlabelled_samples() -> None:
    boxes = [(np.array([[8.0, 8.0, 24.0, 16.0]], np.float32), np.array([1]))]
    heat, size, mask = detection_targets(boxes, 2, 8, 8)
    assert float(heat[0, 1, 3, 4]) == 1.0 and float(heat[0, 0].max()) == 0.0  # centre (16, 12) -> cell (4, 3)
    assert float(mask.sum()) == 1.0
    torch.testing.assert_close(size[0, :, 3, 4], torch.log(torch.tensor([4.0, 2.0])))
    logits, sz = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    assert float(detection_loss(logits, sz, (heat, size, mask), torch.tensor([False]))) == 0.0
    assert float(detection_loss(logits, sz, (heat, size, mask), torch.tensor([True]))) > 0.0


def test_labelled_pairs_keep_boxes_through_crops(pair_dir: Path) -> None:
    data = load_labelled_pairs([str(pair_dir)], min_side=32)
    assert [p.labelled for p in data.pairs] == [True, True, True, False]
    assert data.pairs[0].classes.tolist() == [0, 1]  # person, car -> vehicle
    ir, vis, boxes, labelled = data.sample(np.random.default_rng(0), 6, 32)
    assert ir.shape == vis.shape == (6, 1, 32, 32) and labelled.dtype == torch.bool
    for bx, _ in boxes:
        assert (bx >= 0).all() and (bx <= 32).all()
    assert sum(len(b) for b, _ in boxes) > 0


def test_bilevel_training_runs_and_records(pair_dir: Path, tmp_path: Path) -> None:
    res = train_bilevel(_cfg(pair_dir, tmp_path, epochs=2, steps=2), BilevelConfig(det_weight=0.5, head_width=4))
    wf = load_weights(res.weights, families=("t2p",))
    assert wf.meta["bilevel"]["det_weight"] == 0.5 and wf.meta["training_data"][0]["labelled"] == 3
    assert "detection" in res.csv.read_text().splitlines()[0]
    assert torch.load(res.checkpoint, weights_only=True)["classes"] == ["person", "vehicle"]


def test_cli_bilevel_and_prompt_options(pair_dir: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--variant", "t2p-s", "--data", str(pair_dir), "--out", str(tmp_path),
                                 "--epochs", "1", "--steps", "1", "--batch", "1", "--crop", "32", "--val-pairs", "0",
                                 "--threads", "1", "--device", "cpu", "--bilevel", "--text-encoder", "hash:16",
                                 "--prompt", "pedestrians", "--prompt", "vehicles"])
    assert r.exit_code == 0, r.output
    wf = load_weights(tmp_path / "t2p-s.pt")
    assert wf.config["prompts"] == ["pedestrians", "vehicles"] and wf.config["text_source"] == "hash:16"
    assert "bilevel" in wf.meta and "detection head" in r.output


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
