"""``ivfusion fuse``: fuse (and detect on) pairs of image files or folders."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import track

from ivfusion_ros.config import PipelineConfig
from ivfusion_ros.errors import InputError
from ivfusion_ros.io.images import find_pairs, read_thermal, read_visible
from ivfusion_ros.pipeline import Pipeline
from ivfusion_ros.viz import draw_detections, save_rgb, side_by_side

__all__ = ["run_fuse"]


def run_fuse(ir: Path, vis: Path, out: Path, cfg: PipelineConfig, strips: bool, boxes: bool,
             console: Console) -> dict:
    """Fuse every pair; unreadable pairs are reported and counted, not fatal. Returns the JSON written."""
    pairs = find_pairs(ir, vis)
    pipeline = Pipeline(cfg)
    console.print(f"fuse: {len(pairs)} pair(s), {pipeline.describe()}")
    results, failed = {}, {}
    (out / "strips" if strips else out).mkdir(parents=True, exist_ok=True)
    for pair in track(pairs, description="fusing", console=console, disable=not console.is_terminal):
        try:
            res = pipeline.process(read_thermal(pair.ir), read_visible(pair.vis), keep_inputs=strips)
        except InputError as err:
            failed[pair.name] = str(err)
            console.print(f"[yellow]skipped {pair.name}:[/] {err}")
            continue
        img = draw_detections(res.fused, res.detections) if boxes else res.fused
        save_rgb(out / f"{pair.name}.png", img)
        if strips:
            save_rgb(out / "strips" / f"{pair.name}.png",
                      side_by_side([res.thermal, res.rgb, img], ["thermal", "RGB", f"fused: {res.variant}"]))
        results[pair.name] = res.summary()
    report = {"pipeline": pipeline.describe(), "fused": len(results), "failed": failed, "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "detections.json").write_text(json.dumps(report, indent=2))
    note = f", {len(failed)} failed" if failed else ""
    console.print(f"fused {len(results)}/{len(pairs)} pair(s) into {out}/{note}")
    if not results:
        raise InputError(f"none of the {len(pairs)} pair(s) could be fused", reason="bad_input")
    return report
