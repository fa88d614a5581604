"""Training: the loss goes down, resume equals an uninterrupted run, metrics.csv and the weights' record."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion import FusionContext, create_fuser
from ivfusion_ros.fusion.nets.weights import load_weights
from ivfusion_ros.train import CSV_COLUMNS, TrainConfig, load_pairs, train

TINY = {"channels": [4, 8, 8], "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "idfm_hidden": 4}


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four generated night pairs (64x72): a dark street with a lit patch, a glare blob and warm figures."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "ir").mkdir()
    (root / "vi").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :72]
    for i in range(4):
        vis = np.full((64, 72, 3), 15 + 10 * i, np.uint8)
        vis[:, 40:] = 120
        vis[(yy - 12) ** 2 + (xx - 60) ** 2 < 36] = 255
        vis = np.clip(vis + rng.integers(-8, 9, vis.shape), 0, 255).astype(np.uint8)
        ir = np.full((64, 72), 70, np.uint8)
        ir[20:50, 10 + 5 * i:22 + 5 * i] = 210
        ir = np.clip(ir + rng.integers(-5, 6, ir.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{i:02d}.png"), vis)
    return root


def _cfg(pair_dir: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(variant="amfusion-s", data=[str(pair_dir)], out=str(out), epochs=2, steps=3, batch=2, crop=32,
                lr=5e-3, seed=7, val_pairs=1, net=dict(TINY), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_load_pairs(pair_dir: Path) -> None:
    ps = load_pairs(str(pair_dir), min_side=100)
    assert len(ps) == 4 and ps.sources[0]["pairs"] == 4
    p = ps.pairs[0]
    assert p.ir.shape == p.vis.shape and min(p.ir.shape) >= 100  # upscaled to the crop size
    assert p.ir.min() >= 0.0 and p.vis.max() <= 1.0
    ir, vis = ps.sample(np.random.default_rng(0), 3, 32)
    assert ir.shape == vis.shape == (3, 1, 32, 32)


def test_training_reduces_the_loss(pair_dir: Path, tmp_path: Path) -> None:
    # without the glare term: on 32-pixel crops whether a batch holds a light effect or not swings the epoch mean
    # more than four tiny epochs of learning move it (the term has its own test in test_losses.py)
    res = train(_cfg(pair_dir, tmp_path, epochs=4, steps=5, val_pairs=0, loss={"glare": 0.0}))
    losses = [r["loss"] for r in res.history]
    assert losses[-1] < losses[0]
    assert res.steps == 20


def test_resume_matches_uninterrupted_run(pair_dir: Path, tmp_path: Path) -> None:
    full = train(_cfg(pair_dir, tmp_path / "full"))
    first = train(_cfg(pair_dir, tmp_path / "part"), stop_after=1)  # interrupted after epoch 1
    assert [r["epoch"] for r in first.history] == [1]
    resumed = train(_cfg(pair_dir, tmp_path / "part", epochs=2), resume=first.checkpoint)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.steps == full.steps == 6
    a, b = load_weights(full.weights).state_dict, load_weights(resumed.weights).state_dict
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-5)


def test_csv_weights_record_and_fuser(pair_dir: Path, tmp_path: Path) -> None:
    res = train(_cfg(pair_dir, tmp_path, command="ivfusion train ..."))
    with res.csv.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r[f"val_{m}"]) > 0 for r in rows for m in ("EN", "SD", "SF", "VIF", "Qabf", "SSIM"))
    wf = load_weights(res.weights, families=("amfusion",))
    assert wf.variant == "amfusion-s" and wf.config["channels"] == [4, 8, 8]
    for key in ("training_data", "command", "epochs", "loss_weights", "val_metrics", "seed"):
        assert key in wf.meta
    assert wf.meta["epochs"] == 2 and set(wf.meta["loss_weights"]) == {"intensity", "gradient", "ssim",
                                                                         "illumination", "glare"}
    fuser = create_fuser("amfusion", weights=str(res.weights))
    ir = torch.rand(1, 1, 30, 41)
    assert fuser.fuse(ir, torch.rand(1, 3, 30, 41), FusionContext.uniform(ir)).shape == (1, 3, 30, 41)


def test_resume_rejects_other_files(tmp_path: Path, pair_dir: Path) -> None:
    bogus = tmp_path / "x.pt"
    torch.save({"a": 1}, bogus)
    with pytest.raises(ModelError, match="not an ivfusion training checkpoint"):
        train(_cfg(pair_dir, tmp_path), resume=bogus)


def test_cli_train(pair_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["train", "--data", str(pair_dir), "--out", str(out), "--epochs", "1", "--steps",
                                 "1", "--batch", "2", "--crop", "32", "--val-pairs", "0", "--device", "cpu",
                                 "--threads", "0"])
    assert r.exit_code == 0, r.output
    assert (out / "amfusion-s.pt").is_file() and (out / "last.pt").is_file()
    r = CliRunner().invoke(app, ["train", "--data", str(pair_dir), "--out", str(out), "--loss", "perceptual=1"])
    assert r.exit_code == 1 and "unknown loss term" in r.output


class _AuxNet(torch.nn.Module):
    """A test family whose network computes a loss term itself, as a codebook's commitment term would."""

    multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.2))
        self.aux_losses: dict[str, torch.Tensor] = {}

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        self.aux_losses = {"pull": (self.w - 0.9) ** 2}  # pulls w to 0.9; the image terms alone would not
        return (self.w * ir + (1 - self.w) * vis).clamp(0, 1)


def test_network_computed_loss_terms_are_weighted_logged_and_required(pair_dir: Path, tmp_path: Path) -> None:
    from ivfusion_ros.fusion.nets import list_nets, register_net
    from ivfusion_ros.fusion.nets.losses import create_loss, register_loss
    from ivfusion_ros.train import csv_columns

    if "aux-test-net" not in list_nets():

        @register_net("auxtest", "Test network with a network-computed loss term.")
        def aux_test_net(**_: object) -> torch.nn.Module:
            net = _AuxNet()
            net.variant, net.family, net.config = "aux-test-net", "auxtest", {}
            return net

        register_loss("auxtest", {"intensity": 0.0, "pull": 1.0}, aux=("pull",))
    res = train(_cfg(pair_dir, tmp_path / "aux", variant="aux-test-net", net={}, epochs=3, steps=10, lr=0.05))
    with Path(res.csv).open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == csv_columns(("intensity", "pull"))
    assert float(rows[-1]["pull"]) < 0.2 * float(rows[0]["pull"])
    assert float(rows[-1]["intensity"]) == 0.0  # weight 0: not computed
    with pytest.raises(ModelError, match="did not compute it"):
        create_loss("auxtest")(*(torch.rand(1, 1, 8, 8) for _ in range(5)), aux={})


def test_the_best_validation_epoch_is_kept_beside_the_last(pair_dir: Path, tmp_path: Path) -> None:
    from ivfusion_ros.train.trainer import best_score

    res = train(_cfg(pair_dir, tmp_path, epochs=3, steps=2))
    scores = [best_score(r) for r in res.history]
    assert res.best == tmp_path / "amfusion-s-best.pt"
    wf = load_weights(res.best)
    best_epoch = scores.index(max(scores)) + 1
    assert wf.meta["best_of"] == {"by": "val_VIF+val_Qabf", "score": max(scores), "epoch": best_epoch}
    assert wf.meta["epochs"] == best_epoch
    if best_epoch == 3:  # the last epoch was the best: the same weights as the final file
        last = load_weights(res.weights).state_dict
        for k, v in wf.state_dict.items():
            torch.testing.assert_close(v, last[k])
    assert train(_cfg(pair_dir, tmp_path / "noval", val_pairs=0)).best is None
