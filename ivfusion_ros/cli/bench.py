"""``ivfusion bench``: per-stage latency of the pipeline, as medians and percentiles over many frames.

With ``--nets`` it also times fusion networks alone (model-only: torch and ONNX Runtime on the same random
inputs), so the pipeline's overhead around a learned variant is visible beside the network's own time.
Timings on shared machines are noisy: read the medians, and compare cases measured in the same run.
"""

from __future__ import annotations

import functools
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.demo.scene import NightStreetScene
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.pipeline import STAGES, Pipeline

__all__ = ["bench_case", "bench_nets", "run_bench"]

WARMUP = 5
DISTINCT_FRAMES = 8  # rendered once and cycled, so rendering is not timed


def _parse_size(size: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size expects WxH, e.g. 640x512, got {size!r}") from None
    if w < 64 or h < 64:
        raise ConfigError(f"--size {size}: each side must be at least 64 px")
    return w, h


def _detector_overrides(det: str) -> dict:
    if det in ("hog", "none"):
        return {"detector.type": det}
    return {"detector.type": "yolo", "detector.model": det}


def bench_case(frames: list, cfg: PipelineConfig, n: int) -> dict:
    """Run ``WARMUP + n`` frames; return per-stage median / p90 / p99 and the end-to-end figures (ms)."""
    pipe = Pipeline(cfg)
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    totals = []
    for i in range(WARMUP + n):
        f = frames[i % len(frames)]
        res = pipe.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
        if i >= WARMUP:
            for s in STAGES:
                samples[s].append(res.timings.get(s, 0.0))
            totals.append(res.latency_ms)

    total = _stats(totals)
    return {"stages": {s: _stats(v) for s, v in samples.items()}, "total": total,
            "fps_at_p50": round(1000.0 / total["p50"], 1) if total["p50"] > 0 else None,
            "pipeline": pipe.describe()}


def _stats(v: list[float]) -> dict:
    a = np.asarray(v)
    return {"p50": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3)}


def _time(fn: Callable[[], object], n: int) -> dict:
    for _ in range(WARMUP):
        fn()
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return _stats(ms)


def bench_nets(nets: list[str], w: int, h: int, n: int, threads: int = 0) -> list[dict]:
    """Model-only latency of each fusion network at ``w x h`` (padded to its multiple): torch and ONNX Runtime.

    Random weights: latency does not depend on them. The ONNX model is exported to a temporary file with the
    fast (torchscript) exporter; its parity with torch is checked on the way.
    """
    from ivfusion_ros.fusion.nets.registry import create_net
    from ivfusion_ros.runtime.export import export_onnx
    from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

    rows = []
    for name in nets:
        net = create_net(name).eval()
        m = int(net.multiple)
        hp, wp = -(-h // m) * m, -(-w // m) * m
        xs = [torch.rand(1, 1, hp, wp) for _ in range(4)]
        with torch.inference_mode():
            t_torch = _time(functools.partial(net, *xs), n)
        with tempfile.TemporaryDirectory() as tmp:
            res = export_onnx(net, Path(tmp) / f"{name}.onnx", exporter="torchscript", meta={"trained": False})
            runner = OnnxNetRunner(res.path, threads=threads)
            t_ort = _time(functools.partial(runner, *xs), n)
        rows.append({"net": name, "params": sum(p.numel() for p in net.parameters()), "input": [wp, hp],
                     "torch": t_torch, "onnxruntime": t_ort, "parity_max_abs_diff": max(res.max_abs_diff.values())})
    return rows


def _model_overhead(cases: list[dict], net_rows: list[dict], base: PipelineConfig) -> None:
    """Add ``model_only_ms`` and ``fuse_over_model`` to cases of learned variants whose network was timed alone.

    The network is the one the variant runs (``fusion.weights``' header, else the variant's default), the
    backend the one the weights select (``.onnx``: ONNX Runtime, else torch), so the ratio is the pipeline's
    fusion stage (padding, maps, chroma) over the bare network on the same inputs' size.
    """
    from ivfusion_ros.fusion.learned import DEFAULT_NETS
    from ivfusion_ros.fusion.nets.weights import load_weights, read_onnx_header

    weights = base.fusion.weights
    backend = "onnxruntime" if weights.lower().endswith(".onnx") else "torch"
    by_net = {r["net"]: r for r in net_rows}
    for c in cases:
        if c["variant"] not in DEFAULT_NETS:
            continue
        if weights:
            net = (read_onnx_header(weights) if backend == "onnxruntime" else load_weights(weights)).variant
        else:
            net = DEFAULT_NETS[c["variant"]]
        if net in by_net:
            model = by_net[net][backend]["p50"]
            c["model_only"] = {"net": net, "backend": backend, "p50": model}
            c["fuse_over_model"] = round(c["stages"]["fuse"]["p50"] / model, 3) if model > 0 else None


def _bench_size(n: int, w: int, h: int, variants: str, detectors: str, device: str, overrides: dict,
                nets: str) -> tuple[list[dict], list[dict]]:
    scene = NightStreetScene(width=w, height=h, num_frames=DISTINCT_FRAMES, seed=0)
    frames = [scene.frame(i) for i in range(DISTINCT_FRAMES)]
    base = update_config(PipelineConfig(), **{"registration.homography": scene.homography.ravel().tolist(),
                                              "runtime.device": device, **overrides})
    cases = []
    for v in [s for s in variants.split(",") if s]:
        for d in [s for s in detectors.split(",") if s]:
            cfg = update_config(base, **{"fusion.variant": v, **_detector_overrides(d)})
            r = bench_case(frames, cfg, n)
            cases.append({"size": [w, h], "variant": v, "detector": d, **r})
    table = Table("variant", "detector", *STAGES, "total p50", "total p90", "fps", title=f"median ms/frame at {w}x{h}")
    for c in cases:
        table.add_row(c["variant"], Path(c["detector"]).name, *(f"{c['stages'][s]['p50']:.2f}" for s in STAGES),
                      f"{c['total']['p50']:.2f}", f"{c['total']['p90']:.2f}", f"{c['fps_at_p50']}")
    Console(width=200).print(table)
    net_rows = bench_nets([s for s in nets.split(",") if s], w, h, n, threads=base.runtime.threads) if nets else []
    for r in net_rows:
        r["size"] = [w, h]
    if net_rows:
        nt = Table("network", "params", "input", "torch p50", "torch p90", "ORT p50", "ORT p90", "ORT fps",
                   title=f"fusion networks alone (model-only), ms at {w}x{h}, CPU")
        for r in net_rows:
            o = r["onnxruntime"]
            nt.add_row(r["net"], f"{r['params']:,}", "x".join(map(str, r["input"])), f"{r['torch']['p50']:.2f}",
                       f"{r['torch']['p90']:.2f}", f"{o['p50']:.2f}", f"{o['p90']:.2f}",
                       f"{1000.0 / o['p50']:.1f}" if o["p50"] > 0 else "-")
        Console(width=200).print(nt)
        _model_overhead(cases, net_rows, base)
        for c in cases:
            if "fuse_over_model" in c:
                m, fuse = c["model_only"], c["stages"]["fuse"]["p50"]
                Console(width=200).print(
                    f"{c['variant']} + {Path(c['detector']).name} at {w}x{h}: fuse stage {fuse:.2f} ms vs "
                    f"{m['net']} alone ({m['backend']}) {m['p50']:.2f} ms: pipeline overhead "
                    f"{100 * (c['fuse_over_model'] - 1):+.0f} %")
    return cases, net_rows


def run_bench(n: int, size: str, variants: str, detectors: str, device: str, json_out: Path | None,
              overrides: dict | None = None, nets: str = "") -> dict:
    """Bench every variant x detector (and network, with ``nets``) at each size of ``size`` (``WxH[,WxH]``)."""
    sizes = [_parse_size(s) for s in size.split(",") if s.strip()]
    if not sizes:
        raise ConfigError("--size: give at least one WxH")
    cases: list[dict] = []
    net_rows: list[dict] = []
    for w, h in sizes:
        c, r = _bench_size(n, w, h, variants, detectors, device, dict(overrides or {}), nets)
        cases += c
        net_rows += r
    report = {
        "size": list(sizes[0]), "sizes": [list(s) for s in sizes], "frames": n, "warmup": WARMUP, "device": device,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()},
        "cases": cases,
        "nets": net_rows,
    }
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
    return report
