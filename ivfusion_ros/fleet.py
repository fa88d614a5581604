"""Replay a fleet of bags: one after the other in this process, or one Ray task per bag, and one merged report.

A bag is the unit of work. Its pairs must be replayed in order (the synchroniser, the AGC and the camera
watchdog carry state from one message to the next), so splitting a bag would change its output; replaying
whole bags side by side does not. Every bag runs :func:`replay_job`, which calls the same
:func:`~ivfusion_ros.replay.replay_bag` as ``ivfusion replay BAG``: a bag's output bag and report are the same
whether it was replayed alone, in a fleet in this process, or in a Ray task.

Why Ray: a fleet outgrows one process long before it outgrows one machine (a replay uses one pipeline, a few
cores at most), and then one machine. Ray schedules one task per bag over the cores of this machine (a local
Ray started for the run, the default) or of a cluster (``--ray-address``), returns each task's report to the
driver and keeps the rest (images, output bags) where the task ran. Each task asks Ray for its share of the
CPUs (``total // bags``, at least 1) and runs torch and ONNX Runtime with that many threads, so tasks do not
oversubscribe a node. On a cluster the bags and the output/report folders must be on storage every node sees
at the same path, and ``ivfusion_ros`` must be installed on every node. Ray is an optional dependency
(``pip install 'ivfusion_ros[ray]'``), imported only by :func:`replay_fleet` when asked for.

A bag that fails (unreadable, topics missing, nothing fused, even a bug) is reported with its error and the
others still complete. The fleet's ``report.json`` (schema ``ivfusion.fleet/1``; keys are stable, new keys may be
added) holds:

* ``created``, ``execution`` (``mode`` ``in-process`` or ``ray``, ``address``, ``cpus``, ``task_cpus``),
  ``pipeline``, ``config`` (the base configuration; under Ray ``runtime.threads`` is each task's CPU share),
  ``versions``;
* ``bags``: one summary per bag, in the order given: ``name``, ``bag``, ``status`` (``ok`` or ``failed``),
  ``error``, ``error_type``, ``worker`` (host:pid that ran it), ``wall_s``, ``output`` (the output bag or
  null), ``report`` (its own ``report.json``, relative to the fleet's folder, or null), and from its replay
  report (null when the bag could not be read): ``storage``, ``topics``, ``totals``, ``drops``,
  ``accounting``, ``latency_ms``;
* ``totals``: ``bags``, ``bags_ok``, ``bags_failed``, ``messages`` per camera, ``pairs``, ``fused``,
  ``failed_pairs`` by reason, ``dropped_messages``, ``bag_duration_s`` (sum), ``bags_wall_s`` (sum of the bags'
  replay times), ``wall_s`` (the fleet's), ``fps`` (fused frames per fleet second), ``realtime_factor``;
* ``drops``: dropped messages by reason; ``accounting``: per camera ``received = fused + sum(dropped)``;
* ``latency_ms``: mean/p50/p90/p99/max per stage and in total over *all* frames of all bags (computed from the
  frame records, never averaged from the bags' percentiles);
* ``failed``: ``{name, bag, error_type, error}`` for every failed bag.

Per-frame records stay in each bag's own ``report.json`` (``bags/<name>/report.json``).
``report.md`` and ``report.html`` show the same tables (built with :mod:`ivfusion_ros.eval.report`'s
writers) and ``plots/latency.png`` the per-stage latency of the fleet and of each bag.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ivfusion_ros import __version__
from ivfusion_ros.config import PipelineConfig, config_to_flat, update_config
from ivfusion_ros.errors import ConfigError, IvfusionError
from ivfusion_ros.replay import (
    CAMERAS,
    FrameRecord,
    ReplayOptions,
    ReplayReport,
    _json_value,
    _versions,
    latency_summary,
    replay_bag,
    require_fused,
)

__all__ = ["FLEET_SCHEMA", "BagJob", "BagResult", "FleetReport", "RayOptions", "fleet_tables", "import_ray",
           "plan_jobs", "replay_fleet", "replay_job"]

FLEET_SCHEMA = "ivfusion.fleet/1"
RAY_INSTALL_HINT = "pip install 'ivfusion_ros[ray]'"
_BAG_SUFFIXES = (".mcap", ".db3", ".bag")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """Where to run the Ray tasks: a local Ray with ``cpus`` CPUs (``None``: all), or the cluster at ``address``
    (``auto``: the one this machine belongs to; ``ray://host:10001``: through Ray Client)."""

    address: str | None = None
    cpus: int | None = None

    def __post_init__(self) -> None:
        if self.address and self.cpus is not None:
            raise ConfigError("--ray-cpus sizes a local Ray; a cluster (--ray-address) has its own CPUs")
        if self.cpus is not None and self.cpus < 1:
            raise ConfigError(f"--ray-cpus: expected at least 1 CPU, got {self.cpus}")


@dataclass(frozen=True)
class BagJob:
    """One bag of a fleet: where it is, its unique name, and where its output bag and report go."""

    bag: str
    name: str
    out: str | None = None
    report_dir: str | None = None
    threads: int = 0  # > 0: run the pipeline with this many threads (the task's CPU share)


@dataclass
class BagResult:
    """What replaying one bag gave: its report, or the error that stopped it (or both: nothing fused)."""

    bag: str
    name: str
    report: ReplayReport | None = None
    error: str | None = None
    error_type: str | None = None
    worker: str = ""
    wall_s: float = 0.0
    out: str | None = None
    report_file: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` that says how to install it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def _bag_name(bag: Path) -> str:
    """``runs/day1.mcap`` -> ``day1``; a rosbag2 folder ``runs/day1/`` -> ``day1``."""
    return bag.stem if bag.suffix in _BAG_SUFFIXES else bag.name


def plan_jobs(bags: Sequence[str | Path], out_dir: str | Path | None, report_dir: str | Path | None,
              opts: ReplayOptions | None = None) -> list[BagJob]:
    """One job per bag, named after the bag (``-2``, ``-3``... when names repeat), with its output paths.

    Output bags go to ``<out_dir>/<name>.fused.mcap`` (``<name>.fused/`` for sqlite3), reports to
    ``<report_dir>/bags/<name>/``.
    """
    opts = opts or ReplayOptions()
    if out_dir is not None and Path(out_dir).suffix in _BAG_SUFFIXES:
        raise ConfigError(f"with several bags (or --ray) --out is a folder for the output bags, not {out_dir}")
    jobs, seen = [], Counter[str]()
    for bag in bags:
        base = _bag_name(Path(bag))
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out = None
        if out_dir is not None:
            out = str(Path(out_dir) / (f"{name}.fused.mcap" if (opts.storage or "mcap") == "mcap" else f"{name}.fused"))
        rep = None if report_dir is None else str(Path(report_dir) / "bags" / name)
        jobs.append(BagJob(str(bag), name, out, rep))
    return jobs


def replay_job(job: BagJob, cfg: PipelineConfig, opts: ReplayOptions | None = None,
               progress: Callable[[int, int], None] | None = None) -> BagResult:
    """Replay one bag of a fleet with :func:`~ivfusion_ros.replay.replay_bag`; never raises.

    This is the Ray task body as well as the in-process step, so a bag gives the same output either way. Errors
    are caught and returned: one bad bag must not stop the fleet. Package errors (unreadable bag, missing topics,
    nothing fused) keep their message; anything else is a bug and is logged with its traceback.
    """
    if job.threads > 0:
        cfg = update_config(cfg, **{"runtime.threads": job.threads})
    worker = f"{socket.gethostname()}:{os.getpid()}"
    result = BagResult(job.bag, job.name, worker=worker, out=job.out,
                       report_file=None if job.report_dir is None else str(Path(job.report_dir) / "report.json"))
    t0 = time.perf_counter()
    try:
        result.report = replay_bag(job.bag, cfg, job.out, job.report_dir, opts, progress=progress)
        require_fused(result.report)
    except IvfusionError as err:
        result.error, result.error_type = str(err), type(err).__name__
    except Exception as err:  # a bug: report it with the bag, the other bags go on
        log.error("replaying %s failed:\n%s", job.bag, traceback.format_exc())
        result.error, result.error_type = f"{type(err).__name__}: {err}", type(err).__name__
    result.wall_s = time.perf_counter() - t0
    if result.report is None:
        result.out = result.report_file = None  # nothing was written
    return result


def _run_ray(jobs: list[BagJob], cfg: PipelineConfig, opts: ReplayOptions, ray_opts: RayOptions,
             on_result: Callable[[BagResult], None] | None) -> tuple[list[BagResult], dict[str, Any]]:
    """Run each job as a Ray task (connecting to, or starting, Ray); results in job order."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        if ray_opts.address:
            ray.init(address=ray_opts.address)
        else:  # a private instance for this run: no dashboard, no usage report sent anywhere
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=ray_opts.cpus, include_dashboard=False)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        share = max(1, cpus // max(1, len(jobs)))
        task = ray.remote(num_cpus=share, max_retries=0)(replay_job)
        pending = {task.remote(replace(job, threads=share), cfg, opts): job for job in jobs}
        results: dict[str, BagResult] = {}
        waiting = list(pending)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                job = pending[ref]
                try:
                    res = ray.get(ref)
                except Exception as err:  # the worker died or could not import the package
                    res = BagResult(job.bag, job.name, error=f"Ray task failed: {err}", error_type=type(err).__name__)
                results[job.name] = res
                if on_result is not None:
                    on_result(res)
    finally:
        if started:
            ray.shutdown()
    execution = {"mode": "ray", "address": ray_opts.address or "local", "cpus": cpus, "task_cpus": share}
    return [results[j.name] for j in jobs], execution


def replay_fleet(
    bags: Sequence[str | Path],
    cfg: PipelineConfig,
    out_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    opts: ReplayOptions | None = None,
    *,
    ray: RayOptions | None = None,
    on_result: Callable[[BagResult], None] | None = None,
    progress: Callable[[BagJob], Callable[[int, int], None] | None] | None = None,
) -> FleetReport:
    """Replay ``bags``: in this process one after the other, or with ``ray`` one Ray task per bag.

    Writes each bag's output to ``out_dir`` and its report under ``report_dir/bags/``, then the fleet report
    (``report.json``, ``report.md``, ``report.html``, ``plots/``) into ``report_dir``. Failed bags are in the
    report (:attr:`FleetReport.failed`); this only raises for errors of the whole run (options, Ray missing).

    Args:
        bags: the input bags (anything ``replay_bag`` reads).
        cfg: the configuration every bag is replayed with.
        out_dir: folder of the output bags (``None``: none written).
        report_dir: folder of the reports (``None``: none written).
        opts: topics and output options, as for one bag.
        ray: run on Ray (local by default) instead of in this process.
        on_result: called with each bag's result as soon as it is known (in completion order under Ray).
        progress: in-process only: ``progress(job)`` returns the ``progress(done, total)`` callback of that bag.
    """
    opts = opts or ReplayOptions()
    if not bags:
        raise ConfigError("no bag to replay")
    if out_dir is None and report_dir is None:
        raise ConfigError("replay needs an output folder (--out) or a report folder (--report), or both")
    if ray is not None:
        import_ray()  # fail before anything is written
    jobs = plan_jobs(bags, out_dir, report_dir, opts)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if ray is not None:
        results, execution = _run_ray(jobs, cfg, opts, ray, on_result)
    else:
        results = []
        for job in jobs:
            res = replay_job(job, cfg, opts, progress(job) if progress is not None else None)
            results.append(res)
            if on_result is not None:
                on_result(res)
        execution = {"mode": "in-process", "address": None, "cpus": os.cpu_count(), "task_cpus": None}
    fleet = FleetReport(results, {k: _json_value(v) for k, v in config_to_flat(cfg).items()}, execution,
                        wall_s=time.perf_counter() - t0, report_dir=None if report_dir is None else str(report_dir))
    if report_dir is not None:
        fleet.write(report_dir)
    return fleet


@dataclass
class FleetReport:
    """The bags' results merged: :meth:`to_dict` is the fleet's ``report.json`` (see the module docstring)."""

    results: list[BagResult]
    config: dict[str, Any]
    execution: dict[str, Any]
    wall_s: float = 0.0
    report_dir: str | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
                         .isoformat())

    @property
    def failed(self) -> list[BagResult]:
        return [r for r in self.results if not r.ok]

    @property
    def reports(self) -> list[ReplayReport]:
        """The replay reports of the bags that could be read (including those that fused nothing)."""
        return [r.report for r in self.results if r.report is not None]

    def frames(self) -> list[FrameRecord]:
        """Every fused frame of every bag, in bag order."""
        return [f for rep in self.reports for f in rep.frames]

    def _relative(self, path: str | None) -> str | None:
        if path is None or self.report_dir is None:
            return path
        try:
            return Path(path).relative_to(self.report_dir).as_posix()
        except ValueError:
            return path

    def _bag_summary(self, r: BagResult) -> dict[str, Any]:
        d = r.report.to_dict() if r.report is not None else {}
        return {
            "name": r.name, "bag": r.bag, "status": "ok" if r.ok else "failed", "error": r.error,
            "error_type": r.error_type, "worker": r.worker, "wall_s": round(r.wall_s, 3), "output": r.out,
            "report": self._relative(r.report_file),
            **{k: d.get(k) for k in ("storage", "topics", "totals", "drops", "accounting", "latency_ms")},
        }  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        reports = self.reports
        drops: Counter[str] = Counter()
        failed_pairs: Counter[str] = Counter()
        per_cam = {cam: Counter[str]() for cam in CAMERAS}
        for rep in reports:
            drops.update(rep.drops_by_reason())
            failed_pairs.update(rep.failed_pairs)
            for cam in CAMERAS:
                per_cam[cam].update(rep.drops_by_reason(cam))
        received = {cam: sum(rep.received[cam] for rep in reports) for cam in CAMERAS}
        fused = sum(rep.fused for rep in reports)
        duration = sum(rep.bag_duration_s for rep in reports)
        wall = self.wall_s
        return {
            "schema": FLEET_SCHEMA,
            "created": self.created,
            "ivfusion_version": __version__,
            "execution": self.execution,
            "pipeline": reports[0].pipeline if reports else None,
            "config": self.config,
            "versions": _versions(),
            "bags": [self._bag_summary(r) for r in self.results],
            "totals": {
                "bags": len(self.results),
                "bags_ok": len(self.results) - len(self.failed),
                "bags_failed": len(self.failed),
                "messages": received,
                "pairs": sum(rep.pairs for rep in reports),
                "fused": fused,
                "failed_pairs": dict(sorted(failed_pairs.items())),
                "dropped_messages": sum(len(rep.dropped) for rep in reports),
                "bag_duration_s": round(duration, 6),
                "bags_wall_s": round(sum(r.wall_s for r in self.results), 3),
                "wall_s": round(wall, 3),
                "fps": round(fused / wall, 3) if wall > 0 else 0.0,
                "realtime_factor": round(duration / wall, 3) if wall > 0 else 0.0,
            },
            "drops": dict(sorted(drops.items())),
            "accounting": {cam: {"received": received[cam], "fused": fused,
                                 "dropped": dict(sorted(per_cam[cam].items()))} for cam in CAMERAS},
            "latency_ms": latency_summary(self.frames()),
            "failed": [{"name": r.name, "bag": r.bag, "error_type": r.error_type, "error": r.error}
                       for r in self.failed],
        }  # fmt: skip

    def write(self, folder: str | Path) -> Path:
        """Write ``report.json``, ``report.md``, ``report.html`` and ``plots/latency.png`` into ``folder``."""
        from ivfusion_ros.eval.report import html_document, html_table, img_tag, plot_latency, tables_markdown

        out = Path(folder)
        self.report_dir = str(out) if self.report_dir is None else self.report_dir
        d = self.to_dict()
        tables = fleet_tables(d)
        title = f"ivfusion replay: {len(self.results)} bag(s)"
        meta = _meta_lines(d)
        try:
            out.mkdir(parents=True, exist_ok=True)
            plot = None
            scopes = {"all bags": d["latency_ms"], **{b["name"]: b["latency_ms"] for b in d["bags"] if b["latency_ms"]}}
            if d["latency_ms"]:
                (out / "plots").mkdir(exist_ok=True)
                plot = plot_latency({"variants": {k: {"latency_ms": v} for k, v in scopes.items()}},
                                    out / "plots" / "latency.png")  # fmt: skip
            (out / "report.json").write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
            md = [f"# {title}", "", *(f"- {line}" for line in meta), "", tables_markdown(tables)]
            (out / "report.md").write_text("\n".join(md), encoding="utf-8")
            e = html.escape
            body = [f"<p class='meta'>{' · '.join(e(line) for line in meta)}</p>"]
            if d["failed"]:
                body.append("<h2>Failed bags</h2><ul class='notes'>" + "".join(
                    f"<li><b>{e(f['name'])}</b> ({e(f['bag'])}): {e(str(f['error_type']))}: {e(str(f['error']))}</li>"
                    for f in d["failed"]) + "</ul>")  # fmt: skip
            body.append("<h2>Tables</h2>")
            body += [html_table(t) for t in tables]
            if plot is not None:
                body.append(f"<h2>Plots</h2><p>{img_tag(plot, 'latency per stage', 'plot')}</p>")
            body.append(f"<details><summary>configuration</summary><pre>{e(json.dumps(d['config'], indent=1))}"
                        "</pre></details>")
            body.append("<p class='note'>Machine-readable numbers: report.json; per-frame records: each bag's "
                        "bags/&lt;name&gt;/report.json.</p>")
            (out / "report.html").write_text(html_document(title, body), encoding="utf-8")
        except OSError as err:
            raise IvfusionError(f"cannot write the fleet report into {out}: {err.strerror or err}") from None
        return out / "report.json"


def _meta_lines(d: dict[str, Any]) -> list[str]:
    ex, t = d["execution"], d["totals"]
    where = "in this process, one bag after the other" if ex["mode"] == "in-process" else \
        f"Ray ({ex['address']}), {ex['cpus']} CPU(s), {ex['task_cpus']} per bag"  # fmt: skip
    lines = [f"created {d['created']}, ivfusion {d['ivfusion_version']}", f"ran {where}",
             f"{t['bags']} bag(s): {t['bags_ok']} ok, {t['bags_failed']} failed; {t['fused']} frame(s) fused in "
             f"{t['wall_s']:.1f} s ({t['fps']:.1f} frames/s, {t['realtime_factor']:.1f}x real time)"]
    if d["pipeline"]:
        lines.append(f"pipeline: {d['pipeline']}")
    return lines


def fleet_tables(d: dict[str, Any]) -> list[Any]:
    """The fleet report's tables (:class:`~ivfusion_ros.eval.report.ReportTable`): bags, drops, latency."""
    from ivfusion_ros.eval.report import ReportTable

    def num(x: Any, digits: int = 1) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    rows = []
    for b in d["bags"]:
        t, lat = b["totals"] or {}, (b["latency_ms"] or {}).get("total") or {}
        msgs = t.get("messages") or {}
        rows.append([b["name"], b["status"], str(msgs.get("thermal", "–")), str(msgs.get("rgb", "–")),
                     str(t.get("pairs", "–")), str(t.get("fused", "–")), str(t.get("dropped_messages", "–")),
                     num(t.get("fps")), num(lat.get("p50"), 2), num(lat.get("p99"), 2),
                     (f"{b['error_type']}: {b['error']}" if b["error"] else (b["output"] or ""))])  # fmt: skip
    t = d["totals"]
    total_lat = d["latency_ms"].get("total") or {}
    rows.append(["all bags", f"{t['bags_ok']}/{t['bags']} ok", str(t["messages"]["thermal"]),
                 str(t["messages"]["rgb"]), str(t["pairs"]), str(t["fused"]), str(t["dropped_messages"]),
                 num(t["fps"]), num(total_lat.get("p50"), 2), num(total_lat.get("p99"), 2), ""])  # fmt: skip
    tables = [ReportTable("Bags", ["bag", "status", "thermal msgs", "RGB msgs", "pairs", "fused", "dropped",
                                   "frames/s", "total p50 ms", "total p99 ms", "output or error"], rows,
                          note="frames/s of a bag: its own replay; of all bags: fused frames per second of the "
                               "whole run", kind="bags")]  # fmt: skip
    reasons = list(d["drops"])
    if reasons:
        drows = [[b["name"], *(str((b["drops"] or {}).get(r, 0)) for r in reasons)] for b in d["bags"] if b["drops"]]
        drows.append(["all bags", *(str(d["drops"][r]) for r in reasons)])
        tables.append(ReportTable("Dropped messages by reason", ["bag", *reasons], drows, kind="drops"))
    if d["latency_ms"]:
        stages = list(d["latency_ms"])
        lrows = []
        scopes = [("all bags", d["latency_ms"])] + [(b["name"], b["latency_ms"]) for b in d["bags"] if b["latency_ms"]]
        for name, lat in scopes:
            for p in ("p50", "p90", "p99"):
                lrows.append([name, p, *(num((lat.get(s) or {}).get(p), 2) for s in stages)])
        tables.append(ReportTable("Latency per stage (ms)", ["bag", "", *stages], lrows,
                                  note=f"percentiles over the frames of each bag, and over all {t['fused']} "
                                       "frame(s) of the fleet", kind="latency"))  # fmt: skip
    return tables
