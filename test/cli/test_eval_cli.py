"""``ivfusion eval`` end to end on generated night-street pairs with YOLO labels (no development data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from eval_data import write_blob_dataset, write_scene_dataset
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.eval import METRICS

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """4 night-street pairs at 320x256 (seed 1), labels person/car; returns (folder, --set for the homography)."""
    root = tmp_path_factory.mktemp("night")
    return root, write_scene_dataset(root, n=4, seed=1)


@pytest.fixture(scope="module")
def night_report(scene: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root, homography = scene
    out = tmp_path_factory.mktemp("report")
    res = _invoke("eval", str(root), "--variants", "adaptive,average,max", "--detector", "hog", "--out", str(out),
                  "--set", homography, "--set", "runtime.device=cpu")  # fmt: skip
    assert res.exit_code == 0, res.output
    return out, res


def test_eval_writes_the_documented_report(night_report: tuple[Path, object], scene: tuple[Path, str]) -> None:
    out, _ = night_report
    report = json.loads((out / "report.json").read_text())
    assert {"version", "datasets", "config", "detector", "variants", "baselines", "frames", "thumbnails",
            "plots", "metrics", "notes", "command"} <= set(report)  # fmt: skip
    assert report["version"] == 1 and report["config"]["runtime.device"] == "cpu"
    assert report["command"].startswith(f"ivfusion eval {scene[0]} --variants adaptive,average,max --detector hog")
    assert list(report["variants"]) == ["adaptive", "average", "max"]
    for name, block in report["variants"].items():
        assert block["frames"] == 4
        assert list(block["fusion_metrics"]) == list(METRICS)
        assert all(v is not None and math.isfinite(v) for v in block["fusion_metrics"].values()), name
        for stage in ("preprocess", "register", "illumination", "fuse", "detect", "postprocess", "total"):
            p = block["latency_ms"][stage]
            assert 0 <= p["p50"] <= p["p90"] <= p["p99"], (name, stage)
        det = block["detection"]
        assert 0 <= det["map50"] <= 1 and 0 <= det["map50_95"] <= det["map50"]
        assert list(det["per_class"]) == ["person"] and det["ignored_classes"] == ["car"]
    base = report["baselines"]
    assert base["ir_only"]["input"] == "thermal" and base["vis_only"]["input"] == "rgb"
    # The night scene: people in dark clothes are (nearly) invisible to the RGB camera. HOG finds none of them
    # in the visible image alone; on the fused image it finds people, like on thermal alone.
    vis = base["vis_only"]["detection"]["per_class"]["person"]["ap50"]
    fused = {v: b["detection"]["per_class"]["person"]["ap50"] for v, b in report["variants"].items()}
    assert all(ap >= vis for ap in fused.values()), (fused, vis)
    assert max(fused.values()) > vis and base["ir_only"]["detection"]["map50"] > vis
    assert report["detector"]["evaluated_classes"] == ["person"]
    assert any("cannot output car" in n for n in report["notes"])
    # per frame and per data set
    assert len(report["frames"]) == 4 * 5 and {f["regime"] for f in report["frames"]} == {"night"}
    assert report["datasets"][0]["name"] == scene[0].name and report["datasets"][0]["labels"]["format"] == "yolo"
    assert report["datasets"][0]["variants"]["max"]["detection"] == report["variants"]["max"]["detection"]


def test_eval_html_plots_thumbnails_and_tables(night_report: tuple[Path, object]) -> None:
    out, res = night_report
    report = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    for rel in report["plots"].values():
        assert (out / rel).is_file() and f'data-file="{Path(rel).name}"' in page
    items = report["thumbnails"]["items"]
    assert [t["kind"] for t in items].count("best") >= 1 and all((out / t["file"]).is_file() for t in items)
    assert page.count("data:image/png;base64,") == 2 + len(items)
    assert "recall at IoU 0.5" in report["thumbnails"]["criterion"]
    # the printed tables (stdout), also in report.md
    for title in ("Fusion metrics", "Detection", "Latency per stage"):
        assert title in res.stdout
    assert "fused: adaptive" in res.stdout and "VIS only" in res.stdout and "Qabf↑" in res.stdout
    md = (out / "report.md").read_text()
    assert "| fused: max |" in md and "| variant | pairs | EN↑ |" in md


def test_eval_two_data_sets_without_detector(scene: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = scene
    unlabelled = tmp_path / "nolabels"
    write_blob_dataset(unlabelled, n=2)
    for p in sorted((unlabelled / "labels").iterdir()):
        p.unlink()
    (unlabelled / "labels").rmdir()
    out = tmp_path / "out"
    res = _invoke("eval", f"{root},{unlabelled}", "--variants", "average,max", "-d", "none", "--metrics", "EN,Qabf",
                  "--limit", "2", "--no-plots", "--out", str(out), "--set", "runtime.device=cpu")  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert [d["name"] for d in report["datasets"]] == [root.name, "nolabels"]
    assert report["baselines"] == {} and report["variants"]["max"]["detection"] is None
    assert report["variants"]["max"]["frames"] == 4 and list(report["variants"]["max"]["fusion_metrics"]) == ["EN",
                                                                                                               "Qabf"]
    assert report["plots"] == {"latency": None, "timeline": None}
    assert "all data sets" in res.stdout and "Detection" not in res.stdout
    assert any("nolabels: no labels" in n for n in report["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/set"], "data set: no such folder: /nonexistent/set"),
        (["{ir_only}"], "no visible image folder (looked for vi/, vis/, visible/, rgb/; found ir/)"),
        (["{mismatch}"], "label/image mismatch: none of the 2 pair(s)"),
        (["{broken}"], "b0.txt:1: class 7 is not in the class table (2 names)"),
        (["{blobs}", "--labels", "labels/fusion"], "--labels: no such file or folder: labels/fusion or"),
        (["{blobs}", "--variants", "adaptive,nope"], "--variants: unknown variant 'nope'"),
        (["{blobs}", "--metrics", "SSMI"], "--metrics: unknown fusion metric 'SSMI'"),
        (["{blobs}", "-d", "hog", "--model", "m.onnx"], "--model is for --detector yolo or ivdet, not 'hog'"),
        (["{blobs}", "--model", "/missing.onnx"], "model file not found: /missing.onnx"),
        (["{blobs},{blobs}", "--ir", "x", "--vis", "y"], "--ir/--vis select the folders of one data set"),
        ([], "no data set given"),
    ],
)
def test_eval_user_errors_exit_1_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    blobs = tmp_path / "blobs"
    write_blob_dataset(blobs, n=2)
    (tmp_path / "ir_only" / "ir").mkdir(parents=True)
    mismatch = tmp_path / "mismatch"
    write_blob_dataset(mismatch, n=2)
    for p in (mismatch / "labels").glob("b*.txt"):
        p.rename(p.with_name("x" + p.name))
    broken = tmp_path / "broken"
    write_blob_dataset(broken, n=2)
    (broken / "labels" / "b0.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    paths = {"blobs": blobs, "ir_only": tmp_path / "ir_only", "mismatch": mismatch, "broken": broken}
    args = [a.format(**paths) for a in args]
    res = _invoke("eval", *args, "--out", str(tmp_path / "out"), "--set", "runtime.device=cpu")
    assert res.exit_code == 1, res.output
    squeeze = "".join  # the console wraps long lines, even inside paths: compare without white space
    assert squeeze(message.split()) in squeeze(res.output.split()) and "Traceback" not in res.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_eval_yolo_detector_scores_every_shared_class(tmp_path: Path) -> None:
    """A YOLO model's class table (car, person, dog) against labels (Person, car): both shared classes are scored."""
    pytest.importorskip("onnx")
    from detect.tiny_yolo_models import build_model

    model = build_model("yolov8", tmp_path / "tiny.onnx")
    data = tmp_path / "blobs"
    write_blob_dataset(data, n=2)
    out = tmp_path / "out"
    res = _invoke("eval", str(data), "--variants", "max", "--model", str(model), "--metrics", "EN",
                  "--set", "detector.class_names=[car, person, dog]", "--set", "runtime.device=cpu",
                  "--thumbnails", "1", "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["detector"]["type"] == "yolo" and report["detector"]["class_names"] == ["car", "person", "dog"]
    assert report["detector"]["evaluated_classes"] == ["Person", "car"]
    det = report["variants"]["max"]["detection"]
    assert list(det["per_class"]) == ["Person", "car"] and det["ignored_gt"] == 0 and det["num_gt"] == 10
    assert det["num_det"] > 0 and 0 <= det["map50"] <= 1
    assert not any("cannot output" in n for n in report["notes"])
    assert "--model" in report["command"] and "AP@0.5 car" in res.stdout


def test_eval_with_an_ivdet_model_of_ones_own(tmp_path: Path) -> None:
    """--detector ivdet --model FILE evaluates a train-detector output instead of the shipped weights."""
    pytest.importorskip("onnx")
    from ivfusion_ros.detect.ivdet import export_detector_onnx
    from ivfusion_ros.detect.nets.yolox import YoloxNano

    model = export_detector_onnx(YoloxNano(("person", "car")), tmp_path / "mine.onnx", (128, 96))
    data = tmp_path / "blobs"
    write_blob_dataset(data, n=2)
    out = tmp_path / "out"
    res = _invoke("eval", str(data), "--variants", "max", "-d", "ivdet", "--model", str(model), "--metrics", "EN",
                  "--set", "runtime.device=cpu", "--thumbnails", "0", "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["detector"]["type"] == "ivdet" and "mine.onnx" in report["detector"]["description"]
    assert report["detector"]["class_names"] == ["person", "car"]
