"""``ivfusion train-detector``: the command's body (the typer signature lives in :mod:`ivfusion_ros.cli.main`)."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.console import Console

from ivfusion_ros.cli.progress import progress_bar
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.train.detector_trainer import DetectorTrainConfig, DetectorTrainResult, train_detector

__all__ = ["parse_size", "run_train_detector"]


def parse_size(text: str) -> list[int]:
    """``"416x320"`` -> ``[416, 320]``."""
    w, sep, h = text.lower().partition("x")
    try:
        size = [int(w), int(h)]
    except ValueError:
        size = []
    if not sep or len(size) != 2:
        raise ConfigError(f"--input-size expects WxH, e.g. 416x320; got {text!r}")
    return size


def run_train_detector(cfg: DetectorTrainConfig, resume: Path | None, argv: list[str], console: Console
                       ) -> DetectorTrainResult:
    """Train, printing one line per epoch, and say where the files are; Ctrl-C keeps the last finished epoch."""
    cfg.command = shlex.join(["ivfusion", "train-detector", *argv])
    with progress_bar(console, "train-detector") as update:
        try:
            # one line per epoch, never wrapped: logs of background runs are read with grep
            result = train_detector(cfg, resume=resume, progress=update,
                                    log=lambda line: console.print(line, soft_wrap=True, highlight=False))
        except KeyboardInterrupt:
            last = Path(cfg.out) / "last.pt"
            console.print(f"interrupted: the last finished epoch is kept in {last} (continue with --resume {last})"
                          if last.is_file() else "interrupted before the first epoch ended; nothing was written")
            raise SystemExit(130) from None
    best = ", ".join(f"{k[4:]} {v:.3f}" for k, v in result.best.items() if k.startswith("val_map50") and v == v)
    console.print(f"{result.epochs} epochs in {result.seconds:.0f} s; best epoch {int(result.best.get('epoch', 0))}: "
                  f"{best}")
    console.print(f"weights: {result.weights} and {result.onnx}\ncheckpoint: {result.checkpoint}\n"
                  f"metrics: {result.csv}")
    return result
