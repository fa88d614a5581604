"""``ivfusion replay``: bags through the pipeline, faster than real time, into bags and a report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ivfusion_ros.cli.progress import progress_bar
from ivfusion_ros.config import PipelineConfig
from ivfusion_ros.errors import IvfusionError
from ivfusion_ros.fleet import BagJob, BagResult, FleetReport, RayOptions, import_ray, replay_fleet
from ivfusion_ros.replay import ReplayOptions, ReplayReport, replay_bag, require_fused

__all__ = ["run_fleet", "run_replay"]


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
    require_fused(report)
    return report


def _bag_line(r: BagResult) -> str:
    """One line of console markup for a replayed bag (file names and messages escaped)."""
    name = escape(r.name)
    if r.report is None:
        return f"[red]{name}: failed[/] ({r.error_type}: {escape(str(r.error))})"
    t = r.report.to_dict()["totals"]
    line = (f"{name}: {t['messages']['thermal']} + {t['messages']['rgb']} msgs -> {t['fused']} fused, "
            f"{t['dropped_messages']} dropped, {r.wall_s:.1f} s on {r.worker}")
    return line if r.ok else f"[red]{name}: failed[/] ({escape(str(r.error))}); {line}"


def run_fleet(bags: Sequence[Path], cfg: PipelineConfig, out_dir: Path | None, report_dir: Path | None,
              opts: ReplayOptions, ray: RayOptions | None, console: Console) -> FleetReport:
    """Replay several bags (in this process, or one Ray task each), print a line per bag as it completes and the
    totals, write the fleet report. Fails (IvfusionError, exit code 1) when any bag failed, after the report."""
    if ray is not None:
        import_ray()  # before saying anything
        console.print("replay: " + (f"Ray cluster {ray.address}" if ray.address else "local Ray")
                      + f", one task per bag, {len(bags)} bag(s)")

    bars = ExitStack()  # the progress bar of the bag being replayed (in-process only)

    def progress(job: BagJob) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            if job.name not in opened:
                opened[job.name] = bars.enter_context(progress_bar(console, job.name))
            opened[job.name](done, total)

        return update

    opened: dict[str, Callable[[int, int], None]] = {}

    def on_result(r: BagResult) -> None:
        bars.close()
        console.print(_bag_line(r))

    with bars:
        fleet = replay_fleet(bags, cfg, out_dir, report_dir, opts, ray=ray, on_result=on_result,
                             progress=progress if ray is None else None)
    d = fleet.to_dict()
    t = d["totals"]
    console.print(f"fleet: {t['bags_ok']}/{t['bags']} bag(s) ok, {t['messages']['thermal']} + "
                  f"{t['messages']['rgb']} msgs -> {t['fused']} fused, {t['dropped_messages']} dropped"
                  + (f" ({', '.join(f'{k} {v}' for k, v in d['drops'].items())})" if d["drops"] else "")
                  + f"; {t['wall_s']:.1f} s, {t['fps']:.1f} frames/s"
                  + (f"; wrote {out_dir}" if out_dir is not None else "")
                  + (f"; report {Path(report_dir) / 'report.json'}" if report_dir is not None else ""))
    if fleet.failed:
        names = ", ".join(r.name for r in fleet.failed)
        raise IvfusionError(f"{len(fleet.failed)} of {len(fleet.results)} bag(s) failed: {names}")
    return fleet
