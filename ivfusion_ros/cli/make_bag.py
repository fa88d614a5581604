"""``ivfusion make-bag``: a folder of image pairs -> a rosbag2 that replays like two cameras."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ivfusion_ros.cli.progress import progress_bar
from ivfusion_ros.io.make_bag import MakeBagOptions, MakeBagSummary, make_bag

__all__ = ["run_make_bag"]


def run_make_bag(ir: Path, vis: Path, out: Path, opts: MakeBagOptions, console: Console) -> MakeBagSummary:
    """Write the bag with a progress bar and print what was written."""
    with progress_bar(console, "writing") as update:
        summary = make_bag(ir, vis, out, opts, progress=update)
    th, rgb = summary.topics
    span = (summary.end_ns - summary.start_ns) / 1e9
    console.print(f"wrote {summary.pairs} pair(s) to {out} ({summary.storage}): {th} and {rgb} "
                  f"({summary.msgtype}), {span:.3f} s of stamps")
    if summary.registration_homography is not None:
        h = ", ".join(f"{v:.6g}" for v in summary.registration_homography)
        console.print(f"the thermal images are warped: replay with --set 'registration.homography=[{h}]'")
    return summary
