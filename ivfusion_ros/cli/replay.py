"""``ivfusion replay``: a bag through the pipeline, faster than real time, into a bag and a report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ivfusion_ros.cli.progress import progress_bar
from ivfusion_ros.config import PipelineConfig
from ivfusion_ros.errors import InputError
from ivfusion_ros.replay import ReplayOptions, ReplayReport, replay_bag

__all__ = ["run_replay"]


def run_replay(bag: Path, cfg: PipelineConfig, out: Path | None, report_dir: Path | None, opts: ReplayOptions,
               console: Console) -> ReplayReport:
    """Replay with a progress bar; print the totals. Fails (InputError) when no pair could be fused."""
    with progress_bar(console, "replaying") as update:
        report = replay_bag(bag, cfg, out, report_dir, opts, progress=update)
    d = report.to_dict()
    t = d["totals"]
    console.print(f"replay: {report.pipeline}")
    console.print(f"{report.topics['thermal']}: {t['messages']['thermal']} msgs, {report.topics['rgb']}: "
                  f"{t['messages']['rgb']} msgs -> {t['pairs']} pair(s), {t['fused']} fused "
                  f"(slop {report.sync['slop']} s, queue {report.sync['queue_size']})")
    if d["drops"]:
        console.print("dropped messages: " + ", ".join(f"{k} {v}" for k, v in d["drops"].items()))
    console.print(f"{t['fps']:.1f} frames/s, {t['realtime_factor']:.1f}x real time"
                  + (f"; wrote {out}" if out is not None else "")
                  + (f"; report {Path(report_dir) / 'report.json'}" if report_dir is not None else ""))
    if report.fused == 0:
        raise InputError(f"no pair of {report.topics['thermal']} and {report.topics['rgb']} could be fused "
                         f"(drops: {d['drops'] or 'none'}); check the topics and sync.slop", reason="unpaired")
    return report
