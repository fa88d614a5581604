"""``ivfusion demo``: the pipeline end to end on the generated night street."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track

from ivfusion_ros.config import PipelineConfig
from ivfusion_ros.demo.scene import NightStreetScene
from ivfusion_ros.detect.boxes import count_matches
from ivfusion_ros.pipeline import STAGES, Pipeline
from ivfusion_ros.viz import draw_detections, save_rgb, side_by_side

__all__ = ["run_demo"]


def _person_hits(boxes: np.ndarray, class_names: list[str], det) -> tuple[int, int]:
    """(ground-truth people found at IoU >= 0.5, ground-truth people) for one frame."""
    gt = boxes[[n == "person" for n in class_names]] if len(boxes) else boxes
    keep = np.array([n == "person" for n in det.names()], bool)
    found = count_matches(gt, det.boxes[keep], det.scores[keep]) if keep.any() else 0
    return found, len(gt)


def run_demo(out: Path, frames: int, seed: int, make_config: Callable[[dict[str, Any]], PipelineConfig],
             console: Console) -> dict:
    """Render ``frames`` frames, run the pipeline on each, write images and ``summary.json``; return the summary."""
    scene = NightStreetScene(num_frames=frames, seed=seed)
    # The demo rig's calibration is known: the user's YAML may change anything else.
    cfg = make_config({"registration.homography": scene.homography.ravel().tolist()})
    pipeline = Pipeline(cfg)
    rgb_only = pipeline.detector  # the same detector, run on the RGB image alone for comparison
    per_frame, hits = [], {"fused": [0, 0], "rgb": [0, 0]}
    strips_dir, fused_dir = out / "strips", out / "fused"
    strips_dir.mkdir(parents=True, exist_ok=True)
    fused_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"demo: {frames} frames {scene.width}x{scene.height}, {pipeline.describe()}")
    for i in track(range(frames), description="fusing", console=console, disable=not console.is_terminal):
        frame = scene.frame(i)
        res = pipeline.process(frame.thermal, frame.rgb, frame.stamp, thermal_encoding="mono16", keep_inputs=True)
        names = [frame.class_names[c] for c in frame.class_ids]
        f_found, n_gt = _person_hits(frame.boxes, names, res.detections)
        r_found, _ = _person_hits(frame.boxes, names, rgb_only.detect(frame.rgb))
        hits["fused"][0] += f_found
        hits["rgb"][0] += r_found
        hits["fused"][1] += n_gt
        hits["rgb"][1] += n_gt
        boxed = draw_detections(res.fused, res.detections)
        save_rgb(fused_dir / f"frame_{i:03d}.png", boxed)
        strip = side_by_side([res.thermal, res.rgb, boxed], ["thermal (registered)", "RGB", f"fused: {res.variant}"])
        save_rgb(strips_dir / f"frame_{i:03d}.png", strip)
        if i == frames // 2:
            save_rgb(out / "strip.png", strip)
        per_frame.append({**res.summary(), "frame": i, "people": n_gt, "people_found_fused": f_found,
                          "people_found_rgb_only": r_found})
    timings = {s: round(median(f["timings_ms"].get(s, 0.0) for f in per_frame), 3) for s in STAGES}
    summary = {
        "frames": frames,
        "size": [scene.width, scene.height],
        "pipeline": pipeline.describe(),
        "person_recall_fused": round(hits["fused"][0] / max(1, hits["fused"][1]), 3),
        "person_recall_rgb_only": round(hits["rgb"][0] / max(1, hits["rgb"][1]), 3),
        "median_ms": timings,
        "median_total_ms": round(median(sum(f["timings_ms"].values()) for f in per_frame), 3),
        "per_frame": per_frame,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(
        f"people found (IoU>=0.5): fused {hits['fused'][0]}/{hits['fused'][1]}, RGB alone {hits['rgb'][0]}/"
        f"{hits['rgb'][1]}; median latency {summary['median_total_ms']} ms/frame; wrote {out}/"
    )
    return summary
