"""The report writer on hand-made frame records: keys, aggregation, tables, HTML, plots, best/worst picking."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import IvfusionError
from ivfusion_ros.eval import DetectionEvaluator, GroundTruth
from ivfusion_ros.eval.report import (
    REPORT_VERSION,
    FramePicker,
    FrameRecord,
    build_report,
    latency_table,
    metric_means,
    percentiles,
    report_tables,
    tables_markdown,
    write_report,
)
from ivfusion_ros.pipeline import STAGES

#: The documented top-level keys of report.json, version 1.
TOP_KEYS = {"version", "title", "created", "ivfusion_version", "command", "config", "environment", "detector",
            "metrics", "datasets", "variants", "baselines", "thumbnails", "plots", "notes", "frames",
            "default_choice"}  # fmt: skip
FRAME_KEYS = {"dataset", "name", "index", "stamp", "variant", "input", "regime", "illumination", "glare_fraction",
              "num_detections", "detections", "timings_ms", "fusion_metrics", "num_gt", "matched"}  # fmt: skip


def _frames(n: int = 4) -> list[FrameRecord]:
    det = Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.8], np.float32), np.array([0]), ("person",))
    out = []
    for i in range(n):
        for v, qabf, fuse_ms in (("adaptive", 0.4 + 0.1 * i, 10.0 + i), ("max", 0.3, 2.0)):
            out.append(FrameRecord(
                name=f"f{i}", variant=v, regime="night" if i < 2 else "day", illumination=0.1 + 0.2 * i,
                glare_fraction=0.01 * i, detections=det.to_dicts() if i % 2 else [],
                timings_ms={s: (fuse_ms if s == "fuse" else 1.0) for s in STAGES}, dataset="set", index=i,
                stamp=float(i), fusion_metrics={"EN": 6.0 + i, "Qabf": qabf, "Nabf": 0.01,
                                                "PSNR": math.inf if i == 0 else 20.0},
                num_gt=2, matched=i % 2,
            ))  # fmt: skip
        out.append(FrameRecord(f"f{i}", "vis_only", "night", 0.1, 0.0, [], {}, float(i), "set", i, "rgb",
                               num_gt=2, matched=0))  # fmt: skip
    return out


def test_percentiles_and_aggregation() -> None:
    assert percentiles([1.0, 2.0, 3.0, 4.0, 100.0]) == {"p50": 3.0, "p90": 61.6, "p99": 96.16}
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}
    frames = _frames()
    lat = latency_table(frames)
    assert list(lat) == ["adaptive", "max"]  # baselines carry no latency
    assert list(lat["adaptive"]) == [*STAGES, "total"]
    assert lat["adaptive"]["fuse"]["p50"] == 11.5 and lat["max"]["total"]["p50"] == 7.0
    means = metric_means(frames)
    assert means["adaptive"]["EN"] == pytest.approx(7.5)
    assert means["adaptive"]["PSNR"] == 20.0  # the infinite frame is left out of the mean


def test_frame_picker_keeps_extremes_and_builds_only_them() -> None:
    made = []
    picker = FramePicker(k=2, dataset="d")
    scores = [0.5, 0.9, 0.1, 0.7, 0.3, math.nan, 0.8, 0.6, 0.75]
    for i, s in enumerate(scores):
        picker.offer((s, 0.0), f"f{i}", lambda i=i: made.append(i) or np.zeros((2, 2, 3), np.uint8))
    thumbs = picker.thumbnails()
    assert [(t.kind, t.name, t.rank) for t in thumbs] == [("best", "f1", 1), ("best", "f6", 2),
                                                          ("worst", "f2", 1), ("worst", "f4", 2)]  # fmt: skip
    assert thumbs[2].score == (0.1, 0.0)
    # NaN is unranked; 0.75 fits neither the 2 best nor the 2 k = 4 worst candidates when it comes: not built
    assert picker.ranked == 8 and made == [0, 1, 2, 3, 4, 6, 7]
    few = FramePicker(k=3)
    for i, s in enumerate((0.2, 0.6)):
        few.offer(s, f"g{i}", lambda: np.zeros((2, 2, 3), np.uint8))
    assert [(t.kind, t.name) for t in few.thumbnails()] == [("best", "g1"), ("best", "g0")]  # shown once
    none = FramePicker(k=0)
    none.offer(1.0, "x", lambda: pytest.fail("k=0 builds nothing"))
    assert none.thumbnails() == []


def _detection() -> dict:
    ev = DetectionEvaluator(["person"])
    gt = GroundTruth(np.array([[1, 2, 11, 22]], np.float32), np.array([0]), ("person",))
    ev.add("a", gt, Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.9], np.float32),
                               np.array([0]), ("person",)))  # fmt: skip
    return {"adaptive": ev.compute(), "vis_only": {"map50": 0.0, "map50_95": 0.0, "num_gt": 1, "num_det": 0,
            "per_class": {"person": {"ap50": 0.0, "ap50_95": 0.0, "num_gt": 1, "num_det": 0}}}}  # fmt: skip


def test_build_report_has_the_documented_keys_and_strict_json() -> None:
    frames = _frames()
    report = build_report(frames, detection=_detection(), dataset_detection={"set": _detection()},
                          datasets=[{"name": "set", "pairs": 4}], config={"fusion.levels": 4},
                          notes=["a note"], command="ivfusion eval x", criterion="Qabf")  # fmt: skip
    assert set(report) == TOP_KEYS and report["version"] == REPORT_VERSION == 1
    text = json.dumps(report, allow_nan=False)  # no NaN or inf anywhere
    assert json.loads(text)["frames"][0].keys() == FRAME_KEYS
    assert report["frames"][0]["fusion_metrics"]["PSNR"] is None  # inf -> null
    assert set(report["variants"]) == {"adaptive", "max"}
    block = report["variants"]["adaptive"]
    assert set(block) == {"frames", "fusion_metrics", "detection", "latency_ms"} and block["frames"] == 4
    assert block["detection"]["map50"] == 1.0 and report["variants"]["max"]["detection"] is None
    assert report["baselines"] == {"vis_only": {"input": "rgb", "frames": 4, "detection": _detection()["vis_only"]}}
    ds = report["datasets"][0]
    assert ds["pairs"] == 4 and ds["variants"]["adaptive"]["detection"]["map50"] == 1.0
    assert report["metrics"]["Nabf"] == {"higher_is_better": False}


def test_tables_bold_the_best_value_and_render_markdown() -> None:
    report = build_report(_frames(), detection=_detection(), datasets=[{"name": "set"}])
    tables = report_tables(report)
    # one data set: no "all" section; one candidate (max is a baseline): no default-variant table
    assert [t.kind for t in tables] == ["fusion", "detection", "latency"]
    row = {"variant": "adaptive", "map50_95": 0.3, "map50": 0.5, "wins": 12, "comparisons": 12, "glare_ok": True,
           "fuse_ms": 10.0, "why": ""}
    two = {**report, "default_choice": {"variant": "adaptive", "rule": "the rule",
                                        "candidates": [row, {**row, "variant": "t2p", "map50_95": 0.2}]}}
    choice = report_tables(two)[-1]
    assert choice.kind == "choice" and [r[0] for r in choice.rows] == ["adaptive", "t2p"]
    assert choice.rows[0][-1] == "default" and choice.note == "rule: the rule"
    fusion = tables[0]
    assert fusion.columns[:4] == ["variant", "pairs", "EN↑", "Qabf↑"] and "Nabf↓" in fusion.columns
    qabf = fusion.columns.index("Qabf↑")
    assert (0, qabf) in fusion.bold and (1, qabf) not in fusion.bold  # adaptive 0.55 beats max 0.30
    nabf = fusion.columns.index("Nabf↓")
    assert {(0, nabf), (1, nabf)} <= fusion.bold  # a tie: both
    det = tables[1]
    assert [r[0] for r in det.rows] == ["VIS only", "fused: adaptive"] and det.rows[1][1] == "1.000"
    lat = tables[2]
    assert [r[:2] for r in lat.rows[:3]] == [["adaptive", "p50"], ["adaptive", "p90"], ["adaptive", "p99"]]
    md = tables_markdown(tables)
    assert "| variant | pairs | EN↑ |" in md and "**0.550**" in md and "**Detection — set**" in md


def test_write_report_files_html_and_plots(tmp_path: Path) -> None:
    frames = _frames()
    picker = FramePicker(k=1, dataset="set")
    for i in range(4):
        picker.offer(float(i), f"f{i}", lambda: np.full((20, 30, 3), 128, np.uint8), caption=f"frame {i}")
    report = write_report(tmp_path / "out", frames, thumbnails=picker.thumbnails(), detection=_detection(),
                          datasets=[{"name": "set", "pairs": 4}], criterion="index")  # fmt: skip
    out = tmp_path / "out"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["plots"] == {"latency": "plots/latency.png", "timeline": "plots/timeline.png"}
    assert [(t["kind"], t["name"]) for t in on_disk["thumbnails"]["items"]] == [("best", "f3"), ("worst", "f0")]
    assert on_disk["thumbnails"]["criterion"] == "index" and report["plots"] == on_disk["plots"]
    for rel in (*on_disk["plots"].values(), *(t["file"] for t in on_disk["thumbnails"]["items"])):
        assert (out / rel).stat().st_size > 100
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert 'data-file="latency.png"' in page and 'data-file="timeline.png"' in page
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) == 4  # 2 plots, 2 thumbs
    assert "Fusion metrics — set" in page and "Latency per stage" in page and "frame 3" in page
    assert (out / "report.md").read_text().startswith("**Fusion metrics — set**")


def test_write_report_without_plots_and_unwritable_folder(tmp_path: Path) -> None:
    report = write_report(tmp_path / "o", _frames(1), plots=False)
    assert report["plots"] == {"latency": None, "timeline": None} and not (tmp_path / "o" / "plots").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(IvfusionError, match=r"cannot write the report into .*file"):
        write_report(tmp_path / "file" / "sub", _frames(1), plots=False)


def test_from_result_round_trip() -> None:
    class R:  # the fields of pipeline.Result that the record reads
        stamp, variant, regime, illumination, glare_fraction = 1.5, "max", "dusk", 0.25, 0.0
        detections = Detections.empty(("person",))
        timings = MappingProxyType({"fuse": 1.0})

    rec = FrameRecord.from_result(R(), "n", dataset="d", index=3, num_gt=0, matched=0)
    assert rec.variant == "max" and rec.input == "fused" and rec.recall is None
    assert FrameRecord.from_result(R(), "n", variant="ir_only", input="thermal").variant == "ir_only"
    assert rec.to_dict().keys() == FRAME_KEYS
