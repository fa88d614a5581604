"""``ivfusion bench``: per-stage latency of the pipeline, as medians and percentiles over many frames.

One case per size x device x variant x backend x detector. Each case reports:

* per-stage p50 / p90 / p99 with the device synchronised around every stage (so a stage's GPU time is billed to
  it), and the end-to-end total;
* throughput: frames per second of the same pipeline with no synchronisation between stages, as a stream runs;
* model-only: the case's own fusion network (same backend, precision and CUDA graphs) and YOLO network timed
  alone on inputs of the frame's size, and the pipeline overhead as a share of that model time;
* with ``--replay``: frames per second of ``replay_bag`` on an MCAP bag of the same frames (reading, decoding,
  pairing, processing, bookkeeping).

With ``--nets`` it also times fusion networks alone on the CPU (torch and ONNX Runtime on the same random inputs).
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

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.core.timing import StageTimer
from ivfusion_ros.demo.scene import NightStreetScene
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.pipeline import STAGES, Pipeline

__all__ = ["bench_case", "bench_nets", "net_gmac", "run_bench"]

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


_TORCHSCRIPT_SUFFIXES = (".torchscript", ".ts", ".pt")


def _detector_overrides(det: str, backend: str) -> dict:
    """``ivdet`` (the shipped detector), ``hog``, ``none``, or a YOLO model file: TorchScript runs on torch, ONNX on
    ``backend`` (onnxruntime or tensorrt; ``--set detector.backend=...`` also works). ``ivdet`` runs on ONNX Runtime,
    ``ivdet:torch`` / ``ivdet:tensorrt`` on those backends."""
    if det in ("hog", "none"):
        return {"detector.type": det}
    if det == "ivdet" or det.startswith("ivdet:"):  # not a model file that happens to start with "ivdet"
        _, _, det_backend = det.partition(":")
        return {"detector.type": "ivdet", "detector.backend": det_backend or "onnxruntime"}
    if Path(det).suffix in _TORCHSCRIPT_SUFFIXES:
        return {"detector.type": "yolo", "detector.model": det, "detector.backend": "torch"}
    return {"detector.type": "yolo", "detector.model": det, "detector.backend": backend}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_only(pipe: Pipeline, variant: str, frame, n: int) -> dict:
    """The case's own networks timed alone: the fusion network on padded frame-size inputs, the YOLO network on its
    input buffer (same backend objects as the pipeline, so same precision, graphs and engines)."""
    out: dict = {}
    dev = pipe.device
    h, w = frame.rgb.shape[:2]
    fuser = pipe.fusers[variant]
    runner = getattr(fuser, "runner", None)
    if runner is not None:
        m = int(fuser.multiple)
        hp, wp = -(-h // m) * m, -(-w // m) * m
        xs = [torch.rand(1, 1, hp, wp, device=dev) for _ in range(4)]
        out["fusion"] = _time(functools.partial(runner, *xs), n, dev)
    network_only = getattr(pipe.detector, "network_only", None)
    if network_only is not None:
        out["detector"] = _time(network_only(), n, dev)
    return out


def bench_case(frames: list, cfg: PipelineConfig, n: int) -> dict:
    """Run ``WARMUP + n`` frames; return per-stage median / p90 / p99, end-to-end figures (ms), throughput (frames
    per second without stage synchronisation) and the model-only times of the case's networks."""
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
    # throughput: no synchronisation between stages (the stream case); the per-frame host copies still sync
    timer = pipe.timer
    pipe.timer = StageTimer(pipe.device, sync=False)
    _sync(pipe.device)
    t0 = time.perf_counter()
    for i in range(n):
        f = frames[i % len(frames)]
        pipe.process(f.thermal, f.rgb, f.stamp, thermal_encoding="mono16")
    _sync(pipe.device)
    fps = n / (time.perf_counter() - t0)
    pipe.timer = timer

    total = _stats(totals)
    models = _model_only(pipe, cfg.fusion.variant, frames[0], n)
    model_ms = sum(v["p50"] for v in models.values())
    return {"stages": {s: _stats(v) for s, v in samples.items()}, "total": total,
            "fps_at_p50": round(1000.0 / total["p50"], 1) if total["p50"] > 0 else None,
            "throughput_fps": round(fps, 1), "model_only": models,
            "overhead_over_model": round((total["p50"] - model_ms) / model_ms, 3) if model_ms > 0 else None,
            "pipeline": pipe.describe()}


def _stats(v: list[float]) -> dict:
    a = np.asarray(v)
    return {"p50": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "p99": round(float(np.percentile(a, 99)), 3)}


def _time(fn: Callable[[], object], n: int, device: torch.device | None = None) -> dict:
    dev = device or torch.device("cpu")
    with torch.inference_mode():
        for _ in range(WARMUP):
            fn()
        ms = []
        for _ in range(n):
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            ms.append((time.perf_counter() - t0) * 1e3)
    return _stats(ms)


def net_gmac(net: torch.nn.Module, xs: list[torch.Tensor]) -> float:
    """Multiply-accumulates of one forward pass, in billions (torch's FLOP counter: convolutions, matrix products
    and attention; element-wise work is not counted, as in the papers' GMAC figures)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(*xs)
    return counter.get_total_flops() / 2e9


def bench_nets(nets: list[str], w: int, h: int, n: int, threads: int = 0) -> list[dict]:
    """Model-only latency (torch and ONNX Runtime) and GMAC of each fusion network at ``w x h`` (padded to its
    multiple).

    A name builds the registry's network with random weights (latency does not depend on them); a weights file
    (``.pt``) builds the network it holds, e.g. a detector-guided AMFusion, whose guide the plain name lacks. The
    ONNX model is exported to a temporary file with the fast (torchscript) exporter; its parity with torch is
    checked on the way.
    """
    from ivfusion_ros.fusion.nets.registry import create_net
    from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights
    from ivfusion_ros.runtime.export import export_onnx
    from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

    rows = []
    for name in nets:
        net = (build_from_weights(load_weights(name)) if name.endswith(".pt") else create_net(name)).eval()
        name = Path(name).name if name.endswith(".pt") else name
        m = int(net.multiple)
        hp, wp = -(-h // m) * m, -(-w // m) * m
        xs = [torch.rand(1, 1, hp, wp) for _ in range(4)]
        gmac = net_gmac(net, xs)
        with torch.inference_mode():
            t_torch = _time(functools.partial(net, *xs), n)
        with tempfile.TemporaryDirectory() as tmp:
            res = export_onnx(net, Path(tmp) / f"{name}.onnx", exporter="torchscript", meta={"trained": False})
            runner = OnnxNetRunner(res.path, threads=threads)
            t_ort = _time(functools.partial(runner, *xs), n)
        rows.append({"net": name, "params": sum(p.numel() for p in net.parameters()), "input": [wp, hp],
                     "gmac": round(gmac, 3), "torch": t_torch, "onnxruntime": t_ort,
                     "parity_max_abs_diff": max(res.max_abs_diff.values())})
    return rows


def _replay_fps(frames: list, cfg: PipelineConfig, tmp: Path) -> dict:
    """Frames per second of ``replay_bag`` over an MCAP bag of ``frames`` (written once per size)."""
    from ivfusion_ros.io.make_bag import MakeBagOptions, make_bag
    from ivfusion_ros.replay import replay_bag

    bag = tmp / "bench.mcap"
    if not bag.exists():
        ir_dir, vis_dir = tmp / "ir", tmp / "vis"
        ir_dir.mkdir(exist_ok=True)
        vis_dir.mkdir(exist_ok=True)
        for i, f in enumerate(frames):
            cv2.imwrite(str(ir_dir / f"{i:04d}.png"), f.thermal)
            cv2.imwrite(str(vis_dir / f"{i:04d}.png"), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        make_bag(ir_dir, vis_dir, bag, MakeBagOptions(thermal_encoding="mono16"))
    pipe = Pipeline(cfg)
    replay_bag(bag, cfg, report_dir=tmp / "warmup", pipeline=pipe)  # graphs, engines, caches
    t0 = time.perf_counter()
    report = replay_bag(bag, cfg, report_dir=tmp / "report", pipeline=pipe)
    elapsed = time.perf_counter() - t0
    n = len(report.frames)
    return {"frames": n, "fps": round(n / elapsed, 1) if elapsed > 0 else None}


def _case_label(c: dict) -> list[str]:
    return [c["device"], c["variant"], c["backend"], Path(c["detector"]).name]


def _bench_size(n: int, w: int, h: int, variants: list[str], detectors: list[str], devices: list[str],
                backends: list[str], overrides: dict, nets: str, replay: bool) -> tuple[list[dict], list[dict]]:
    from ivfusion_ros.fusion.learned import DEFAULT_NETS

    scene = NightStreetScene(width=w, height=h, num_frames=DISTINCT_FRAMES, seed=0)
    frames = [scene.frame(i) for i in range(DISTINCT_FRAMES)]
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            base = update_config(PipelineConfig(), **{"registration.homography": scene.homography.ravel().tolist(),
                                                      "runtime.device": device, **overrides})
            for v in variants:
                for b in backends if v in DEFAULT_NETS else [base.fusion.backend]:
                    for d in detectors:
                        cfg = update_config(base, **{"fusion.variant": v, "fusion.backend": b,
                                                     **_detector_overrides(d, base.detector.backend)})
                        r = bench_case(frames, cfg, n)
                        if replay:
                            r["replay"] = _replay_fps(frames, cfg, Path(tmp))
                        for stage, net in (("fuse", "fusion"), ("detect", "detector")):  # each network's wrapper
                            model = r["model_only"].get(net)
                            if model and model["p50"] > 0:
                                r[f"{stage}_over_model"] = round(r["stages"][stage]["p50"] / model["p50"], 3)
                        cases.append({"size": [w, h], "device": device, "variant": v,
                                      "backend": b if v in DEFAULT_NETS else "-", "detector": d, **r})
    table = Table("device", "variant", "backend", "detector", *STAGES, "p50", "p99", "fps", "stream fps",
                  "model", "overhead", title=f"median ms/frame at {w}x{h}")
    for c in cases:
        model = sum(m["p50"] for m in c["model_only"].values())
        over = c["overhead_over_model"]
        table.add_row(*_case_label(c), *(f"{c['stages'][s]['p50']:.2f}" for s in STAGES),
                      f"{c['total']['p50']:.2f}", f"{c['total']['p99']:.2f}", f"{c['fps_at_p50']}",
                      f"{c['throughput_fps']}", f"{model:.2f}" if model else "-",
                      f"{100 * over:+.0f} %" if over is not None else "-")
    Console(width=240).print(table)
    for c in cases:
        if "replay" in c:
            Console(width=240).print(f"replay {' '.join(_case_label(c))} at {w}x{h}: {c['replay']['fps']} frames/s "
                                     f"over {c['replay']['frames']} frames")
    threads = int(overrides.get("runtime.threads", 0))
    net_rows = bench_nets([s for s in nets.split(",") if s], w, h, n, threads=threads) if nets else []
    for r in net_rows:
        r["size"] = [w, h]
    if net_rows:
        nt = Table("network", "params", "input", "GMAC", "torch p50", "torch p90", "ORT p50", "ORT p90", "ORT fps",
                   title=f"fusion networks alone (model-only), ms at {w}x{h}, CPU")
        for r in net_rows:
            o = r["onnxruntime"]
            nt.add_row(r["net"], f"{r['params']:,}", "x".join(map(str, r["input"])), f"{r['gmac']:.2f}",
                       f"{r['torch']['p50']:.2f}",
                       f"{r['torch']['p90']:.2f}", f"{o['p50']:.2f}", f"{o['p90']:.2f}",
                       f"{1000.0 / o['p50']:.1f}" if o["p50"] > 0 else "-")
        Console(width=200).print(nt)
    return cases, net_rows


def _machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run_bench(n: int, size: str, variants: str, detectors: str, device: str, json_out: Path | None,
              overrides: dict | None = None, nets: str = "", backends: str = "torch", replay: bool = False) -> dict:
    """Bench every device x variant x backend x detector (and network, with ``nets``) at each size of ``size``.

    ``device`` and ``backends`` are comma-separated lists too (``cpu,cuda``; ``torch,onnxruntime,tensorrt``);
    backends apply to learned variants only.
    """
    sizes = [_parse_size(s) for s in size.split(",") if s.strip()]
    if not sizes:
        raise ConfigError("--size: give at least one WxH")
    cases: list[dict] = []
    net_rows: list[dict] = []
    for w, h in sizes:
        c, r = _bench_size(n, w, h, _names(variants), _names(detectors), _names(device), _names(backends),
                           dict(overrides or {}), nets, replay)
        cases += c
        net_rows += r
    report = {
        "size": list(sizes[0]), "sizes": [list(s) for s in sizes], "frames": n, "warmup": WARMUP, "device": device,
        "machine": _machine(),
        "cases": cases,
        "nets": net_rows,
    }
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
    return report
