"""Training LDFusion with a tiny random CLIP: the language-driven loss decreases, its record is kept, the CLI
refuses to start without CLIP weights, and the other families' training is untouched."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fusion.tiny_clip import tiny_guide
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion.nets import create_net
from ivfusion_ros.fusion.nets.ldfusion_loss import CLIP_TERMS, PAPER_PROMPTS, use_clip
from ivfusion_ros.fusion.nets.losses import create_loss
from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights
from ivfusion_ros.train import TrainConfig, csv_columns, train
from ivfusion_ros.train.data import load_pairs

TINY_S = {"dim": 4, "style_channels": 4, "decoder_dim": 8, "mlp_hidden": 8}


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated textured pairs (48x48): warm figures in IR, a lit textured region in the visible image."""
    root = tmp_path_factory.mktemp("ldpairs")
    (root / "ir").mkdir()
    (root / "vi").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        vis = rng.integers(0, 256, (48, 48), dtype=np.uint8)
        vis[:, :20] //= 4
        ir = np.full((48, 48), 60, np.uint8) + rng.integers(0, 40, (48, 48), dtype=np.uint8)
        ir[10:40, 8 + 6 * i:18 + 6 * i] = 220
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{i:02d}.png"), cv2.cvtColor(vis, cv2.COLOR_GRAY2BGR))
    return root


def _cfg(pair_dir: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(variant="ldfusion-s", data=[str(pair_dir)], out=str(out), epochs=5, steps=4, batch=3, crop=48,
                lr=2e-2, seed=3, val_pairs=0, net=dict(TINY_S), device="cpu", threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _fixed_loss(net: torch.nn.Module, pair_dir: Path) -> float:
    """The deterministic CLIP terms (no random crops) of ``net`` on all pairs, whole images."""
    pairs = load_pairs([str(pair_dir)]).pairs
    ir = torch.stack([torch.from_numpy(p.ir)[None] for p in pairs])
    vis = torch.stack([torch.from_numpy(p.vis)[None] for p in pairs])
    illum, glare = torch.full_like(ir, 0.5), torch.zeros_like(ir)
    with torch.no_grad(), use_clip(tiny_guide()):
        return float(create_loss("ldfusion", clip_patch=0.0)(ir, vis, net.eval()(ir, vis, illum, glare), illum,
                                                              glare)[0])


@pytest.mark.parametrize("seed", [0, 5])
def test_language_driven_training_reduces_the_loss(pair_dir: Path, tmp_path: Path, seed: int) -> None:
    torch.manual_seed(seed)  # the trainer initialises the network from the same seed
    before = _fixed_loss(create_net("ldfusion-s", **TINY_S), pair_dir)
    res = train(_cfg(pair_dir, tmp_path, seed=seed), clip=tiny_guide(patch_entropy=0.0))
    after = _fixed_loss(build_from_weights(load_weights(res.weights, families=("ldfusion",))), pair_dir)
    assert after < 0.95 * before, (before, after)  # 20 steps: 8-17 % lower over seeds 0-5
    with res.csv.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == csv_columns(CLIP_TERMS)
    assert all(float(r[t]) > 0 for r in rows for t in CLIP_TERMS)
    wf = load_weights(res.weights, families=("ldfusion",))
    assert wf.variant == "ldfusion-s" and set(wf.meta["loss_weights"]) == set(CLIP_TERMS)
    assert wf.meta["clip"]["prompts"] == PAPER_PROMPTS and wf.meta["clip"]["model"] == "ViT-B-32"


def test_training_without_clip_weights_fails_with_the_recipe(pair_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="needs CLIP weights: pip install open_clip_torch"):
        train(_cfg(pair_dir, tmp_path))
    # pixel terms only: no CLIP needed
    res = train(_cfg(pair_dir, tmp_path / "px", epochs=1, steps=1,
                     loss={**dict.fromkeys(CLIP_TERMS, 0.0), "intensity": 1.0, "ssim": 1.0}))
    assert res.weights.is_file()


def test_cli_needs_clip_weights_before_reading_data(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--variant", "ldfusion-s", "--data", str(tmp_path / "nowhere"),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "needs CLIP weights" in r.output and "--clip-weights" in r.output
    r = CliRunner().invoke(app, ["train", "--variant", "ldfusion-s", "--data", str(tmp_path), "--out",
                                 str(tmp_path / "o"), "--clip-weights", "w.bin", "--clip-prompt", "fused"])
    assert r.exit_code == 1 and "--clip-prompt expects KEY=TEXT" in r.output
