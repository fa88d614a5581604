"""``ivfusion eval``: fusion variants against each other and against single-source detection, on image folders."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ivfusion_ros.config import PipelineConfig, config_to_flat
from ivfusion_ros.eval.dataset import open_datasets
from ivfusion_ros.eval.harness import evaluate, parse_metric_names, parse_variants
from ivfusion_ros.eval.report import ReportTable, report_tables, write_report

__all__ = ["print_tables", "run_eval"]


def print_tables(tables: Sequence[ReportTable], console: Console) -> None:
    """Print report tables with rich (best values of each metric column in bold)."""
    for t in tables:
        table = Table(title=t.title, caption=t.note or None, title_justify="left", caption_justify="left")
        for j, c in enumerate(t.columns):
            table.add_column(escape(c), justify="left" if j == 0 else "right", no_wrap=j == 0)
        for i, row in enumerate(t.rows):
            table.add_row(*(f"[bold green]{escape(c)}[/]" if (i, j) in t.bold else escape(c)
                            for j, c in enumerate(row)))  # fmt: skip
        console.print(table)


def _flat_json(cfg: PipelineConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config_to_flat(cfg).items()}


def run_eval(
    dataset: str | None,
    cfg: PipelineConfig,
    out: Path,
    *,
    variants: str = "adaptive,average,max",
    ir: Path | None = None,
    vis: Path | None = None,
    labels: Path | None = None,
    classes: Path | None = None,
    limit: int | None = None,
    metrics: str | None = None,
    thumbnails: int = 3,
    warmup: int = 1,
    sequence: bool = False,
    plots: bool = True,
    command: str = "",
    console: Console | None = None,
    out_console: Console | None = None,
) -> dict:
    """Open the data sets, evaluate, write the report into ``out`` and print its tables; return the report.

    Messages and progress go to ``console`` (stderr), the tables to ``out_console`` (stdout).
    """
    console = console or Console(stderr=True)
    # Tables are wide: use the terminal's width, or 220 columns when stdout is a file or pipe.
    out_console = out_console or (Console() if sys.stdout.isatty() else Console(width=220))
    variant_list = parse_variants(variants)  # fail on a typo before reading any data
    metric_names = parse_metric_names(metrics)
    datasets = open_datasets(dataset, ir=ir, vis=vis, labels=labels, classes=classes, limit=limit)
    for ds in datasets:
        lab = f"{ds.labels.format} labels in {ds.labels.path} ({', '.join(ds.labels.class_names)})" \
            if ds.labels else "no labels"  # fmt: skip
        extra = f", {len(ds.missing_labels)} without a label file" if ds.labels and ds.missing_labels else ""
        console.print(f"eval: {ds.name}: {len(ds)} pair(s) from {ds.ir_dir} + {ds.vis_dir}; {lab}{extra}")
    total = sum(len(ds) for ds in datasets)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal, transient=True) as progress:  # fmt: skip
        task = progress.add_task("evaluating", total=total)
        res = evaluate(datasets, cfg, variant_list, metrics=metric_names, warmup=warmup, sequence=sequence,
                       thumbnails=thumbnails,
                       on_frame=lambda d, n: progress.update(task, advance=1, description=f"{d}/{n}"))  # fmt: skip
    for ds_name, failed in res.failed.items():
        for name, why in failed.items():
            console.print(f"[yellow]skipped {ds_name}/{name}:[/] {why}")
    descriptions = []
    for ds in datasets:
        d = ds.describe()
        d["failed"] = res.failed.get(ds.name, {})
        descriptions.append(d)
    report = write_report(
        out, res.frames, thumbnails=res.thumbnails, plots=plots, detection=res.detection,
        dataset_detection=res.dataset_detection, datasets=descriptions, config=_flat_json(cfg),
        detector=res.detector, notes=res.notes, command=command, criterion=res.criterion,
        title="ivfusion eval: " + ", ".join(ds.name for ds in datasets),
    )  # fmt: skip
    print_tables(report_tables(report), out_console)
    for n in res.notes:
        console.print(f"note: {n}")
    console.print(f"wrote {out / 'report.html'}, {out / 'report.json'} and {out / 'report.md'}")
    return report


def command_line(dataset: str | None, options: dict[str, object]) -> str:
    """The ``ivfusion eval`` command line that reproduces a run (options left at their default omitted)."""
    args = ["ivfusion", "eval"] + ([dataset] if dataset else [])
    for key, value in options.items():
        if value is None or value is False or value == []:
            continue
        if value is True:
            args.append(key)
        elif isinstance(value, list):
            for v in value:
                args += [key, str(v)]
        else:
            args += [key, str(value)]
    return shlex.join(args)
