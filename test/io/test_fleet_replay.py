"""Fleet replay: several bags into one report, in this process and on a local Ray; failed bags reported while the
others complete; the fleet's latency percentiles over all frames; the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ivfusion_ros.cli.main import app
from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.fleet import FLEET_SCHEMA, RayOptions, plan_jobs, replay_fleet
from ivfusion_ros.io.bag import BagReader, BagWriter, image_msg
from ivfusion_ros.io.make_bag import MakeBagOptions, make_bag
from ivfusion_ros.pipeline import STAGES
from ivfusion_ros.replay import ReplayOptions

runner = CliRunner()
W, H = 64, 48
N_A, N_B = 6, 4  # fused pairs of bag a (make-bag) and bag b (hand-written, with drops)
FAST = ["--detector", "none", "--set", "runtime.device=cpu", "--set", "runtime.threads=1"]
OUTPUTS = ("/fused/image", "/detections", "/status")


def _invoke(*args: Any):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _bag_with_drops(path: Path, n: int = N_B) -> None:
    """``n`` pairs 3 ms apart, then a thermal message without partner (unpaired) and undecodable bytes
    (bad_message)."""
    t0 = 1_700_000_100 * 10**9
    rng = np.random.default_rng(7)
    with BagWriter(path) as bag:
        for i in range(n + 1):
            t = t0 + i * 100_000_000
            thermal = np.full((H, W), 50, np.uint8)
            thermal[10:30, 5 + 6 * i: 20 + 6 * i] = 200
            bag.write("/thermal/image_raw", image_msg(bag.store, thermal, "mono8", t, "thermal"), t)
            if i < n:
                rgb = rng.integers(0, 90, (H, W, 3), dtype=np.uint8)
                bag.write("/camera/image_raw", image_msg(bag.store, rgb, "rgb8", t + 3_000_000, "camera"),
                          t + 3_000_000)
        bag.write_raw("/thermal/image_raw", b"\x00\x01garbage", t0 + (n + 1) * 100_000_000)


@pytest.fixture
def two_bags(tmp_path: Path, pairs: tuple[Path, Path]) -> list[Path]:
    a, b = tmp_path / "bags" / "a.mcap", tmp_path / "bags" / "b.mcap"
    make_bag(*pairs, a, MakeBagOptions(thermal_encoding="mono16", jitter=0.01, seed=1))
    _bag_with_drops(b)
    return [a, b]


def _counts(path: Path) -> dict[str, int]:
    """topic -> messages in the bag, every one read back and deserialised."""
    out: dict[str, int] = {}
    with BagReader(path) as bag:
        r = bag.reader
        for conn, _, raw in r.messages():
            assert r.deserialize(raw, conn.msgtype) is not None
            out[conn.topic] = out.get(conn.topic, 0) + 1
    return out


def _rgb_stamps(path: Path) -> list[int]:
    with BagReader(path) as bag:
        return [m.stamp_ns for m in bag.messages(["/camera/image_raw"])]


def _bag_frames(report_dir: Path, fleet: dict) -> list[dict]:
    """The frame records of every bag, concatenated in bag order, from the bags' own report.json."""
    frames = []
    for b in fleet["bags"]:
        if b["report"] is not None:
            frames += json.loads((report_dir / b["report"]).read_text())["frames"]
    return frames


def _without_timings(frames: list[dict]) -> list[dict]:
    return [{k: v for k, v in f.items() if k not in ("timings_ms", "latency_ms")} for f in frames]


def _check_accounting(d: dict) -> None:
    for cam, acc in d["accounting"].items():
        assert acc["received"] == acc["fused"] + sum(acc["dropped"].values()), cam


def test_in_process_fleet_accounts_for_every_pair(tmp_path: Path, two_bags: list[Path],
                                                  fast_cfg: PipelineConfig) -> None:
    out, rep = tmp_path / "out", tmp_path / "rep"
    fleet = replay_fleet(two_bags, fast_cfg, out, rep)
    assert fleet.failed == []
    d = json.loads((rep / "report.json").read_text())
    assert d["schema"] == FLEET_SCHEMA and d["execution"]["mode"] == "in-process"
    assert [b["name"] for b in d["bags"]] == ["a", "b"] and {b["status"] for b in d["bags"]} == {"ok"}
    t = d["totals"]
    assert (t["bags"], t["bags_ok"], t["bags_failed"]) == (2, 2, 0)
    assert t["messages"] == {"thermal": N_A + N_B + 2, "rgb": N_A + N_B}
    assert t["pairs"] == t["fused"] == N_A + N_B
    assert d["drops"] == {"bad_message": 1, "unpaired": 1} and t["dropped_messages"] == 2
    assert d["accounting"]["thermal"]["dropped"] == {"bad_message": 1, "unpaired": 1}
    assert d["accounting"]["rgb"]["dropped"] == {}
    _check_accounting(d)
    for b in d["bags"]:
        _check_accounting(b)
    assert [b["totals"]["fused"] for b in d["bags"]] == [N_A, N_B]

    # every pair of both bags: one frame per RGB message of each bag, in order, in the bag's own report
    for b, src in zip(d["bags"], two_bags):
        frames = json.loads((rep / b["report"]).read_text())["frames"]
        assert [f["rgb_stamp_ns"] for f in frames] == _rgb_stamps(src)
        assert b["output"] == str(out / f"{b['name']}.fused.mcap")
        counts = _counts(Path(b["output"]))
        assert {k: counts[k] for k in OUTPUTS} == dict.fromkeys(OUTPUTS, b["totals"]["fused"])

    # fleet percentiles: over the concatenated frame records, not averages of the bags' percentiles
    frames = _bag_frames(rep, d)
    assert len(frames) == N_A + N_B
    series = {s: [f["timings_ms"].get(s, 0.0) for f in frames] for s in STAGES}
    series["total"] = [f["latency_ms"] for f in frames]
    assert set(d["latency_ms"]) == set(series)
    for name, values in series.items():
        for q in (50, 90, 99):
            assert d["latency_ms"][name][f"p{q}"] == pytest.approx(np.percentile(values, q), abs=1e-3), (name, q)
        assert d["latency_ms"][name]["max"] == pytest.approx(max(values), abs=1e-3)

    md, page = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    assert "| all bags | 2/2 ok | 12 | 10 | 10 | 10 | 2 |" in md
    assert "Latency per stage (ms)" in md and "unpaired" in md
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert (rep / "plots" / "latency.png").stat().st_size > 0


def test_failed_bags_are_reported_and_the_others_complete(tmp_path: Path, two_bags: list[Path],
                                                          fast_cfg: PipelineConfig) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 64)
    other = tmp_path / "other.mcap"
    _bag_with_drops(other)
    rep = tmp_path / "rep"
    fleet = replay_fleet([junk, two_bags[0], tmp_path / "missing.mcap", other], fast_cfg, tmp_path / "out", rep)
    d = json.loads((rep / "report.json").read_text())
    assert [b["status"] for b in d["bags"]] == ["failed", "ok", "failed", "ok"]
    assert [f["name"] for f in d["failed"]] == ["junk", "missing"]
    junk_entry = d["bags"][0]
    assert junk_entry["error_type"] == "BagError" and "cannot read bag" in junk_entry["error"]
    assert junk_entry["totals"] is None and junk_entry["output"] is None and junk_entry["report"] is None
    assert "no such bag" in d["bags"][2]["error"]
    assert d["totals"]["bags_failed"] == 2 and d["totals"]["fused"] == N_A + N_B
    assert _counts(tmp_path / "out" / "a.fused.mcap")["/fused/image"] == N_A
    assert not (tmp_path / "out" / "junk.fused.mcap").exists()
    assert len(fleet.failed) == 2 and "cannot read bag" in (rep / "report.html").read_text()


def test_nothing_fused_is_a_failed_bag_with_its_report(tmp_path: Path, two_bags: list[Path],
                                                       fast_cfg: PipelineConfig) -> None:
    cfg = update_config(fast_cfg, **{"sync.slop": 0.001})  # bag b's cameras are 3 ms apart: nothing pairs
    fleet = replay_fleet(two_bags[1:], cfg, None, tmp_path / "rep")
    (b,) = fleet.to_dict()["bags"]
    assert b["status"] == "failed" and "could be fused" in b["error"]
    assert b["totals"]["fused"] == 0 and b["drops"] == {"bad_message": 1, "unpaired": 2 * N_B + 1}
    assert (tmp_path / "rep" / "bags" / "b" / "report.json").is_file()


def test_plan_jobs_names_and_paths(tmp_path: Path) -> None:
    jobs = plan_jobs([tmp_path / "x" / "run.mcap", tmp_path / "y" / "run.mcap", tmp_path / "day2"], tmp_path / "o",
                     tmp_path / "r", ReplayOptions(storage="sqlite3"))
    assert [j.name for j in jobs] == ["run", "run-2", "day2"]
    assert jobs[1].out == str(tmp_path / "o" / "run-2.fused") and jobs[1].report_dir == str(tmp_path / "r/bags/run-2")
    assert plan_jobs([tmp_path / "a.db3"], tmp_path / "o", None)[0].out == str(tmp_path / "o" / "a.fused.mcap")
    with pytest.raises(ConfigError, match="folder"):
        plan_jobs([tmp_path / "a.mcap"], tmp_path / "o.mcap", None)


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_several_bags(tmp_path: Path, two_bags: list[Path], fast_cfg: PipelineConfig) -> None:
    res = _invoke("replay", *two_bags, "--out", tmp_path / "out", "--report", tmp_path / "rep", *FAST)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "a: 6 + 6 msgs -> 6 fused, 0 dropped" in text and "b: 6 + 4 msgs -> 4 fused, 2 dropped" in text
    assert "fleet: 2/2 bag(s) ok, 12 + 10 msgs -> 10 fused, 2 dropped (bad_message 1, unpaired 1)" in text
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a.fused.mcap", "b.fused.mcap"}
    written = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.json", "report.md", "report.html", "plots", "bags"} <= written

    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 64)
    res = _invoke("replay", two_bags[0], junk, "--report", tmp_path / "rep2", *FAST)
    assert res.exit_code == 1
    text = " ".join(res.output.split())
    assert "junk: failed (BagError: cannot read bag" in text and "1 of 2 bag(s) failed: junk" in text
    d = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert [b["status"] for b in d["bags"]] == ["ok", "failed"]


def test_cli_option_errors(tmp_path: Path, two_bags: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    res = _invoke("replay", *two_bags, "--out", tmp_path / "o.mcap", *FAST)
    assert res.exit_code == 1 and "--out is a folder" in " ".join(res.output.split())
    res = _invoke("replay", *two_bags, "--out", tmp_path / "o", "--ray-cpus", "2", *FAST)
    assert res.exit_code == 1 and "go with --ray" in res.output
    res = _invoke("replay", *two_bags, "--out", tmp_path / "o", "--ray", "--ray-address", "auto", "--ray-cpus", "2",
                  *FAST)
    assert res.exit_code == 1 and "has its own CPUs" in res.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    res = _invoke("replay", *two_bags, "--out", tmp_path / "o", "--ray", *FAST)
    assert res.exit_code == 1
    assert "pip install 'ivfusion_ros[ray]'" in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------------ Ray


def _tiny_yolo(path: Path) -> Path:
    """The detector tests' tiny ONNX YOLO (known boxes, one scored by the input mean): real detections that
    also load in a Ray worker, which a detector object of the test could not."""
    module = sys.modules.get("tiny_yolo_models")  # imported already when the detector tests ran
    if module is None:
        spec = importlib.util.spec_from_file_location("tiny_yolo_models",
                                                      Path(__file__).parents[1] / "detect" / "tiny_yolo_models.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["tiny_yolo_models"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build_model("yolov8", path)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module (started once: it takes seconds)."""
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'ivfusion_ros[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_fleet_on_local_ray_matches_in_process(tmp_path: Path, two_bags: list[Path], fast_cfg: PipelineConfig,
                                               local_ray: Any) -> None:
    pytest.importorskip("onnx")
    cfg = update_config(fast_cfg, **{"detector.type": "yolo", "detector.model": str(_tiny_yolo(tmp_path / "m.onnx")),
                                     "detector.class_names": ["car", "person", "dog"]})
    local = replay_fleet(two_bags, cfg, tmp_path / "out_local", tmp_path / "rep_local")
    assert local.failed == []
    t0 = time.perf_counter()
    remote = replay_fleet(two_bags, cfg, tmp_path / "out_ray", tmp_path / "rep_ray", ray=RayOptions())
    print(f"fleet of 2 bags on the local Ray: {time.perf_counter() - t0:.1f} s")
    dl = json.loads((tmp_path / "rep_local" / "report.json").read_text())
    dr = json.loads((tmp_path / "rep_ray" / "report.json").read_text())
    assert dr["execution"] == {"mode": "ray", "address": "local", "cpus": 2, "task_cpus": 1}
    assert remote.failed == [] and {b["status"] for b in dr["bags"]} == {"ok"}
    assert all(int(r.worker.rsplit(":", 1)[1]) != os.getpid() for r in remote.results)  # ran in Ray workers
    for key in ("drops", "accounting"):
        assert dr[key] == dl[key]
    assert {k: v for k, v in dr["totals"].items() if "wall" not in k and k not in ("fps", "realtime_factor")} == \
        {k: v for k, v in dl["totals"].items() if "wall" not in k and k not in ("fps", "realtime_factor")}
    for bl, br in zip(dl["bags"], dr["bags"]):
        assert (br["totals"]["fused"], br["drops"]) == (bl["totals"]["fused"], bl["drops"])
    # the same frames, detections included (the pipeline is deterministic); only the timings differ
    frames_local, frames_ray = _bag_frames(tmp_path / "rep_local", dl), _bag_frames(tmp_path / "rep_ray", dr)
    assert _without_timings(frames_ray) == _without_timings(frames_local)
    assert sum(f["num_detections"] for f in frames_ray) >= N_A + N_B
    # the output bags exist, read back with one message per fused pair on each output topic, same pixels
    for b in dr["bags"]:
        path = Path(b["output"])
        assert path == tmp_path / "out_ray" / f"{b['name']}.fused.mcap"
        counts = _counts(path)
        assert {k: counts[k] for k in OUTPUTS} == dict.fromkeys(OUTPUTS, b["totals"]["fused"])
        with BagReader(path) as ray_bag, BagReader(tmp_path / "out_local" / path.name) as local_bag:
            px_ray = [bytes(m.msg.data) for m in ray_bag.messages(["/fused/image"])]
            px_local = [bytes(m.msg.data) for m in local_bag.messages(["/fused/image"])]
        assert px_ray == px_local


def test_cli_ray(tmp_path: Path, two_bags: list[Path], local_ray: Any) -> None:
    res = _invoke("replay", *two_bags, "--ray", "--out", tmp_path / "out", "--report", tmp_path / "rep", *FAST)
    assert res.exit_code == 0, res.output
    assert "one task per bag, 2 bag(s)" in res.output
    d = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert d["execution"]["mode"] == "ray" and d["totals"]["fused"] == N_A + N_B
    assert _counts(tmp_path / "out" / "b.fused.mcap")["/status"] == N_B
