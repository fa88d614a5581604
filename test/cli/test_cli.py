"""The ``ivfusion`` command end to end, through typer's runner (same code path as the console script)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.config import PipelineConfig, load_config
from ivfusion_ros.demo.scene import NightStreetScene

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_demo_writes_outputs_and_finds_people_rgb_misses(tmp_path: Path) -> None:
    res = _invoke("demo", "--out", str(tmp_path), "--frames", "3", "--set", "runtime.device=cpu")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 3 and len(summary["per_frame"]) == 3
    assert len(list((tmp_path / "fused").glob("*.png"))) == 3
    assert len(list((tmp_path / "strips").glob("*.png"))) == 3
    strip = cv2.imread(str(tmp_path / "strip.png"))
    assert strip.shape[1] == 3 * 640
    # the point of the product: people invisible to the RGB camera are found in the fused image
    assert summary["person_recall_fused"] >= 0.6
    assert summary["person_recall_rgb_only"] <= 0.2
    assert summary["per_frame"][0]["regime"] == "night"
    assert set(summary["median_ms"]) >= {"fuse", "detect"}


def _write_pairs(tmp_path: Path, n: int = 2) -> tuple[Path, Path]:
    scene = NightStreetScene(width=320, height=256, num_frames=n, seed=3)
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir()
    vis_dir.mkdir()
    for i in range(n):
        f = scene.frame(i)
        cv2.imwrite(str(ir_dir / f"{i:04d}.png"), f.thermal)  # 16-bit radiometric PNG
        cv2.imwrite(str(vis_dir / f"{i:04d}.png"), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
    (vis_dir / "unpaired.png").write_bytes((vis_dir / "0000.png").read_bytes())
    return ir_dir, vis_dir


def test_fuse_folders(tmp_path: Path) -> None:
    ir_dir, vis_dir = _write_pairs(tmp_path)
    out = tmp_path / "out"
    res = _invoke("fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out), "--strips",
                  "--variant", "max", "--detector", "none")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "detections.json").read_text())
    assert report["fused"] == 2 and report["failed"] == {}
    assert {r["variant"] for r in report["results"].values()} == {"max"}
    fused = cv2.imread(str(out / "0000.png"))
    assert fused.shape == (256, 320, 3)
    assert (out / "strips" / "0001.png").exists()


def test_fuse_reports_unreadable_pairs_and_continues(tmp_path: Path) -> None:
    ir_dir, vis_dir = _write_pairs(tmp_path)
    (ir_dir / "0001.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    res = _invoke("fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out), "-d", "none")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "detections.json").read_text())
    assert report["fused"] == 1 and "cannot read image" in report["failed"]["0001"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fuse", "--ir", "/nonexistent", "--vis", "/nonexistent", "--out", "/tmp/x"], "no such file or folder"),
        (["demo", "--set", "fusion.varient=max"], "did you mean fusion.variant"),
        (["demo", "--variant", "nope"], "unknown variant 'nope'"),
        (["demo", "--set", "novalue"], "--set expects key=value"),
        (["demo", "-d", "yolo", "--set", "detector.model=/missing.onnx"], "model file not found: /missing.onnx"),
        (["bench", "--size", "12x"], "--size expects WxH"),
    ],
)
def test_user_errors_exit_1_with_one_line(args: list[str], message: str) -> None:
    res = _invoke(*args)
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output


def test_config_dump_round_trips(tmp_path: Path) -> None:
    res = _invoke("config", "--dump", "--set", "fusion.levels=3")
    assert res.exit_code == 0
    p = tmp_path / "p.yaml"
    p.write_text(res.output)
    cfg = load_config(p)
    assert cfg.fusion.levels == 3 and cfg.detector == PipelineConfig().detector


def test_config_table_and_variants() -> None:
    res = _invoke("config")
    assert res.exit_code == 0 and "illumination.night_threshold" in res.output
    res = _invoke("variants")
    assert res.exit_code == 0 and "adaptive" in res.output and "average" in res.output


def test_bench_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = _invoke("bench", "--frames", "5", "--size", "160x128", "--variants", "adaptive,max",
                  "--detectors", "none", "--json", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["size"] == [160, 128] and [c["variant"] for c in report["cases"]] == ["adaptive", "max"]
    assert report["cases"][0]["stages"]["fuse"]["p50"] > 0


def test_bench_sizes_backends_and_learned_variant_overhead(tmp_path: Path) -> None:
    """Several sizes and backends in one run; a learned variant's stages are put beside its own network timed alone,
    and a bag replay gives a throughput figure."""
    out = tmp_path / "bench.json"
    res = _invoke("bench", "--frames", "5", "--size", "96x64,128x96", "--variants", "amfusion,average",
                  "--backends", "torch,onnxruntime", "--detectors", "none", "--nets", "amfusion-s", "--replay",
                  "--set", f"runtime.engine_cache={tmp_path / 'cache'}", "--json", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["sizes"] == [[96, 64], [128, 96]]
    cases = report["cases"]
    assert [(c["size"], c["variant"], c["backend"]) for c in cases] == [
        ([w, h], v, b) for w, h in ([96, 64], [128, 96])
        for v, b in (("amfusion", "torch"), ("amfusion", "onnxruntime"), ("average", "-"))]
    assert [r["size"] for r in report["nets"]] == [[96, 64], [128, 96]]
    for case in cases:
        assert case["throughput_fps"] > 0 and case["replay"]["frames"] == 8 and case["replay"]["fps"] > 0
        assert case["total"]["p50"] <= case["total"]["p99"]
        if case["variant"] == "average":  # no network: nothing to compare with
            assert case["model_only"] == {} and case["overhead_over_model"] is None
            continue
        model = case["model_only"]["fusion"]["p50"]
        assert model > 0 and case["fuse_over_model"] == pytest.approx(case["stages"]["fuse"]["p50"] / model,
                                                                        abs=1e-3)
        assert case["overhead_over_model"] == pytest.approx((case["total"]["p50"] - model) / model, abs=1e-3)
        assert case["backend"] in case["pipeline"]
    assert "stream fps" in res.output and "replay cpu amfusion onnxruntime none" in res.output


def test_bench_times_the_yolo_network_alone(tmp_path: Path) -> None:
    """With a YOLO detector, the model-only time includes the detector network, so the overhead is the pipeline's."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detect"))  # the detector tests' tiny models
    from tiny_yolo_models import build_model

    model = build_model("yolov8", tmp_path / "tiny.onnx")
    out = tmp_path / "bench.json"
    res = _invoke("bench", "--frames", "5", "--size", "96x64", "--variants", "amfusion", "--detectors", str(model),
                  "--json", str(out))
    assert res.exit_code == 0, res.output
    case = json.loads(out.read_text())["cases"][0]
    models = case["model_only"]
    assert set(models) == {"fusion", "detector"} and models["detector"]["p50"] > 0
    total_model = models["fusion"]["p50"] + models["detector"]["p50"]
    assert case["overhead_over_model"] == pytest.approx((case["total"]["p50"] - total_model) / total_model, abs=1e-3)
    assert case["detect_over_model"] == pytest.approx(case["stages"]["detect"]["p50"] / models["detector"]["p50"],
                                                      abs=1e-3)


def test_version() -> None:
    res = _invoke("--version")
    assert res.exit_code == 0 and res.output.strip()
