"""``ivfusion train``: parse the options, run :func:`~ivfusion_ros.train.trainer.train` with a progress bar."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rich.console import Console

from ivfusion_ros.cli.progress import progress_bar
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.train.bilevel import BilevelConfig, train_bilevel
from ivfusion_ros.train.trainer import TrainConfig, TrainResult, train

__all__ = ["parse_loss_weights", "parse_net_options", "parse_prompts", "run_train"]


def parse_loss_weights(text: str | None) -> dict[str, float]:
    """``"ssim=0.5,gradient=2"`` -> ``{"ssim": 0.5, "gradient": 2.0}`` (names are checked by the loss)."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--loss expects term=weight[,term=weight...], got {item!r}") from None
    return out


def parse_net_options(items: list[str] | None) -> dict[str, Any]:
    """``["detail_skip=true", "channels=[8, 16]"]`` -> ``{"detail_skip": True, "channels": [8, 16]}`` (YAML values;
    the network checks the names)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--net expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--net {key.strip()}: {value!r} is not a valid value") from None
    return out


def parse_prompts(items: list[str] | None) -> dict[str, str]:
    """``["fused=a sharp image", ...]`` -> ``{"fused": "a sharp image"}``; keys not given keep the paper's prompt."""
    from ivfusion_ros.fusion.nets.ldfusion_loss import PAPER_PROMPTS

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or key.strip() not in PAPER_PROMPTS or not text.strip():
            raise ConfigError(f"--clip-prompt expects KEY=TEXT, KEY one of {', '.join(PAPER_PROMPTS)}; got {item!r}")
        out[key.strip()] = text.strip()
    return {**PAPER_PROMPTS, **out} if out else {}


def run_train(cfg: TrainConfig, resume: Path | None, argv: list[str], console: Console,
              bilevel: BilevelConfig | None = None) -> TrainResult:
    """Train, printing one line per epoch and the files written; ``bilevel`` selects the bilevel training (its
    second file is the fine-tuned lower-level detector, the plain training's the resumable checkpoint)."""
    cfg.command = shlex.join(["ivfusion", "train", *argv])
    with progress_bar(console, f"train {cfg.variant}") as update:
        if bilevel is not None:
            result = train_bilevel(cfg, bilevel, progress=update, log=console.print)
        else:
            result = train(cfg, resume=resume, progress=update, log=console.print)
    console.print(f"{result.epochs} epochs, {result.steps} steps in {result.seconds:.0f} s")
    second = "fine-tuned detector" if bilevel is not None else "checkpoint"
    console.print(f"weights: {result.weights}\n{second}: {result.checkpoint}\nmetrics: {result.csv}")
    if result.best is not None:
        console.print(f"best validation epoch (VIF + Qabf): {result.best}")
    return result
