"""``ivfusion train-detector``: fine-tune the package's YOLOX-nano detector on labelled fused / thermal / visible data.

One run: load the data file's sets (:mod:`~ivfusion_ros.train.detection_data`; each image made as the pipeline makes
it), start from ``init`` (a detector weights file, or a YOLOX-nano ONNX export such as the public COCO one), train
with the YOLOX loss (:mod:`~ivfusion_ros.detect.nets.yolox_loss`) under mosaic / scale / flip / photometric
augmentation, AdamW with warm-up and a cosine schedule, and an exponential moving average of the weights (what is
validated and saved). After every epoch: COCO mAP of the EMA network on each validation input (through the same
:class:`~ivfusion_ros.detect.ivdet.IvdetDetector` that runs in the pipeline), a ``metrics.csv`` row, ``last.pt``
(everything needed to resume; written atomically) and, when the mean validation mAP@0.5 improved, ``best.pt`` +
``best.onnx``.

Reproducibility as in :mod:`~ivfusion_ros.train.trainer`: the augmentation of epoch ``e`` comes from a generator
seeded with ``(seed, e)``, so a resumed run draws the batches the uninterrupted one would have drawn.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ivfusion_ros.config import DetectorConfig, PipelineConfig, load_config
from ivfusion_ros.detect.ivdet import (
    IvdetDetector,
    export_detector_onnx,
    load_detector_weights,
    require_onnx,
    save_detector_weights,
)
from ivfusion_ros.detect.nets.yolox import YoloxNano, load_onnx_weights
from ivfusion_ros.detect.nets.yolox_loss import DetectionLoss
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.eval.detection import DetectionEvaluator
from ivfusion_ros.eval.labels import GroundTruth
from ivfusion_ros.io.atomic import atomic_path
from ivfusion_ros.train.detection_data import (
    Augment,
    DetectionSet,
    DetSample,
    collate,
    load_detection_set,
    read_data_file,
)
from ivfusion_ros.train.trainer import _cosine, _load_checkpoint, _write_csv, start_run

__all__ = ["DetectorTrainConfig", "DetectorTrainResult", "build_network", "train_detector", "validate_detector"]

LOSS_TERMS = ("iou", "obj", "cls")
CHECKPOINT_KIND = "ivfusion-detector-checkpoint"


@dataclass
class DetectorTrainConfig:
    """What ``ivfusion train-detector`` does; stored in every checkpoint so that ``--resume`` needs nothing else.

    Attributes:
        data: the data file (YAML, see :mod:`~ivfusion_ros.train.detection_data`).
        out: output folder.
        init: starting weights: a detector ``.pt``, or a YOLOX-nano ``.onnx`` export ('' = random init).
        init_class_ids: class channels of an ``.onnx`` init to keep, in order (COCO: 0 person, 1 bicycle, 2 car).
        epochs, batch, lr, weight_decay, warmup_steps, min_lr_factor, ema_decay, seed: the optimisation.
        input_size: network input ``[width, height]`` (multiples of 32).
        mosaic, photometric: augmentation strengths (:class:`~ivfusion_ros.train.detection_data.Augment`).
        limit: at most this many images per data set (quick runs, tests).
        device, threads: where to train.
        score_threshold: detection score kept for validation mAP.
        config, sets: the pipeline parameter file and ``--set`` overrides that make the ``fused`` and ``ir`` images
            (the fusion variant the detector will see in the node); default: the package defaults.
        command: the command line, recorded in the weights' metadata.
    """

    data: str = ""
    out: str = "detector_out"
    init: str = ""
    init_class_ids: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 30
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 200
    min_lr_factor: float = 0.05
    ema_decay: float = 0.999
    seed: int = 0
    input_size: list[int] = field(default_factory=lambda: [416, 320])
    mosaic: float = 0.5
    photometric: float = 0.3
    limit: int = 0
    device: str = "cpu"
    threads: int = 0
    score_threshold: float = 0.01
    config: str = ""
    sets: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def check(self) -> None:
        for name, lo in (("epochs", 1), ("batch", 1), ("warmup_steps", 0), ("limit", 0)):
            if getattr(self, name) < lo:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {lo}, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        w, h = self.input_size
        if w % 32 or h % 32 or w <= 0 or h <= 0:
            raise ConfigError(f"--input-size {w}x{h}: both sides must be positive multiples of 32")
        if not 0.0 <= self.mosaic <= 1.0:
            raise ConfigError(f"--mosaic must be in [0, 1], got {self.mosaic}")


@dataclass
class DetectorTrainResult:
    weights: Path
    onnx: Path
    checkpoint: Path
    csv: Path
    epochs: int
    history: list[dict[str, float]]
    best: dict[str, float]
    seconds: float


def pipeline_config(cfg: DetectorTrainConfig) -> PipelineConfig:
    """The pipeline configuration that makes the training images (``cfg.config`` + ``cfg.sets``)."""
    return load_config(cfg.config or None, cfg.sets or None)


def build_network(cfg: DetectorTrainConfig, class_names: Sequence[str]) -> YoloxNano:
    """The starting network: ``cfg.init`` loaded onto a YOLOX-nano with ``class_names``.

    Raises:
        ModelError: the init file cannot be read or does not fit. ConfigError: its classes differ from the data's.
    """
    if not cfg.init:
        return YoloxNano(class_names)
    init = Path(cfg.init)
    if init.suffix.lower() == ".onnx":
        if len(cfg.init_class_ids) != len(class_names):
            raise ConfigError(f"--init-class-ids has {len(cfg.init_class_ids)} ids for {len(class_names)} classes "
                              f"{list(class_names)}")
        if not init.is_file():
            raise ModelError(f"--init: file not found: {init}")
        return load_onnx_weights(YoloxNano(class_names), init, cfg.init_class_ids)
    net, _ = load_detector_weights(init)
    if [n.casefold() for n in net.class_names] != [n.casefold() for n in class_names]:
        raise ConfigError(f"--init {init}: its classes {list(net.class_names)} differ from the data's "
                          f"{list(class_names)}")
    return net


def validate_detector(net: YoloxNano, samples: Sequence[DetSample], input_size: Sequence[int],
                      score_threshold: float = 0.01, device: torch.device | str = "cpu") -> dict[str, float]:
    """COCO mAP of ``net`` per input kind: ``{"map50_fused": ..., "map50_95_fused": ..., ..., "map50": mean}``.

    Runs the network through :class:`~ivfusion_ros.detect.ivdet.IvdetDetector` (torch backend, the letterbox, decode
    and NMS of the pipeline).
    """
    cfg = DetectorConfig(type="ivdet", backend="torch", score_threshold=score_threshold,
                         input_size=tuple(input_size), max_detections=300)
    det = IvdetDetector(cfg, device=str(device), network=copy.deepcopy(net).eval())
    groups: dict[str, list[DetSample]] = {}
    for s in samples:
        groups.setdefault(s.input, []).append(s)
    row: dict[str, float] = {}
    for inp, group in sorted(groups.items()):
        ev = DetectionEvaluator(net.class_names)
        for k, s in enumerate(group):
            gt = GroundTruth(s.boxes, s.classes, net.class_names, None, (s.image.shape[1], s.image.shape[0]))
            ev.add(k, gt, det.detect(s.image))
        m = ev.compute()
        row[f"map50_{inp}"], row[f"map50_95_{inp}"] = m.map50, m.map50_95
    maps = [v for k, v in row.items() if k.startswith("map50_") and not k.startswith("map50_95") and v == v]
    row["map50"] = float(np.mean(maps)) if maps else float("nan")
    return row


class _Ema:
    """Exponential moving average of the weights with YOLOX's ramp (``decay * (1 - exp(-updates / 2000))``)."""

    def __init__(self, net: YoloxNano, decay: float, updates: int = 0) -> None:
        self.net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, updates

    @torch.no_grad()
    def update(self, net: YoloxNano) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        for e, p in zip(self.net.state_dict().values(), net.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)


def _lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then the cosine of the other trainers down to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    return _cosine(step - warmup, total - warmup, floor)


def _columns(rows: Sequence[dict[str, float]]) -> list[str]:
    val_keys = sorted({k for r in rows for k in r if k.startswith("val_")})
    return ["epoch", "step", "lr", "loss", *LOSS_TERMS, *val_keys, "seconds"]


def _describe(data: DetectionSet) -> dict[str, Any]:
    return {"sources": data.sources, "samples": len(data), "skipped": dict(data.skipped)}


def train_detector(cfg: DetectorTrainConfig, resume: str | Path | None = None,
                   log: Callable[[str], None] | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   data: tuple[tuple[str, ...], DetectionSet, DetectionSet] | None = None,
                   stop_after: int | None = None) -> DetectorTrainResult:
    """Train (or resume) a detector and write ``last.pt``, ``metrics.csv``, ``best.pt``/``best.onnx`` into ``cfg.out``.

    Args:
        cfg: the run. With ``resume`` the checkpoint's configuration is used; only ``epochs``, ``out`` and
            ``threads`` are taken from ``cfg``.
        resume: a ``last.pt`` to continue from.
        log: receives one line per epoch (and the data summary).
        progress: ``callback(done_steps, total_steps)``.
        data: ``(class names, train set, val set)`` already loaded (tests); by default read from ``cfg.data``.
        stop_after: end after this epoch as if interrupted (checkpoint written, schedule planned for ``cfg.epochs``).

    Raises:
        ConfigError, InputError, ModelError: bad settings, data or weights (messages name the file).
    """
    t_start = time.perf_counter()
    require_onnx("train-detector (it writes best.onnx)")  # before any work, not after the first epoch
    ckpt = None
    if resume is not None:
        ckpt = _load_checkpoint(Path(resume), CHECKPOINT_KIND, "an ivfusion detector training checkpoint")
        try:
            saved = DetectorTrainConfig(**ckpt["config"])
        except (KeyError, TypeError) as err:
            raise ModelError(f"--resume: {resume} was written by another version of train-detector ({err})") from None
        saved.epochs, saved.out, saved.threads = cfg.epochs, cfg.out, cfg.threads
        cfg = saved
    cfg.check()
    out, device = start_run(cfg.out, cfg.threads, cfg.device)
    say = log or (lambda _s: None)

    if data is None:
        classes, train_specs, val_specs = read_data_file(cfg.data)
        limit = cfg.limit or None
        pipe_cfg = pipeline_config(cfg)
        train_set = load_detection_set(train_specs, classes, pipe_cfg, limit=limit)
        val_set = load_detection_set(val_specs, classes, pipe_cfg, limit=limit)
    else:
        classes, train_set, val_set = data
    if len(train_set) == 0:
        raise ConfigError("no training images")
    for name, ds in (("train", train_set), ("val", val_set)):
        counts = {k: len(v) for k, v in ds.by_input().items()}
        boxes = sum(len(s.boxes) for s in ds.samples)
        skipped = f"; skipped {dict(ds.skipped)}" if ds.skipped else ""
        say(f"{name}: {len(ds)} images {counts}, {boxes} boxes{skipped}")

    torch.manual_seed(cfg.seed)
    # a resumed run takes every weight from the checkpoint: the init file is not needed (nor read) again
    net = (YoloxNano(classes) if ckpt is not None else build_network(cfg, classes)).to(device).train()
    w, h = cfg.input_size
    grid, strides = net.grid(h, w, device)
    loss_fn = DetectionLoss(net.num_classes)
    decay, no_decay = [], []
    for n, p in net.named_parameters():
        (no_decay if n.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps = max(1, len(train_set) // cfg.batch)
    total = cfg.epochs * steps
    ema = _Ema(net, cfg.ema_decay)
    history: list[dict[str, float]] = []
    best: dict[str, float] = {}
    first_epoch, step = 1, 0
    if ckpt is not None:
        try:
            net.load_state_dict(ckpt["net"])
            ema.net.load_state_dict(ckpt["ema"])
            opt.load_state_dict(ckpt["optimizer"])
            ema.updates = int(ckpt["ema_updates"])
            first_epoch, step = int(ckpt["epoch"]) + 1, int(ckpt["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise ModelError(f"--resume: {resume} does not fit this run (classes {list(classes)}): "
                             f"{str(err).strip().splitlines()[0][:160]}") from None
        history = [dict(r) for r in ckpt["history"]]
        best = dict(ckpt.get("best") or {})
    augment = Augment(w, h, mosaic=cfg.mosaic, photometric=cfg.photometric)
    csv_path, ckpt_path = out / "metrics.csv", out / "last.pt"
    best_pt, best_onnx = out / "best.pt", out / "best.onnx"
    record = {"training_data": _describe(train_set), "validation_data": _describe(val_set), "command": cfg.command,
              "init": Path(cfg.init).name if cfg.init else "", "input_size": [w, h], "batch": cfg.batch,
              "lr": cfg.lr, "seed": cfg.seed, "device": str(device), "torch": str(torch.__version__),
              "pipeline": {"config": cfg.config, "set": dict(cfg.sets)}}

    last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    samples = train_set.samples
    for epoch in range(first_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(samples))
        sums = dict.fromkeys(("loss", *LOSS_TERMS), 0.0)
        net.train()
        for k in range(steps):
            items = [augment(rng, samples, int(i)) for i in order[k * cfg.batch:(k + 1) * cfg.batch]]
            images, targets = collate(*zip(*items, strict=True))
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, total, cfg.warmup_steps, cfg.min_lr_factor)
            loss, terms = loss_fn(net.raw(images.to(device)), grid, strides, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            ema.update(net)
            step += 1
            sums["loss"] += float(loss.detach())
            for key in LOSS_TERMS:
                sums[key] += terms[key]
            if progress is not None:
                progress(step, total)
        row: dict[str, float] = {"epoch": epoch, "step": step, "lr": opt.param_groups[0]["lr"],
                                 **{k: v / steps for k, v in sums.items()}}
        val = validate_detector(ema.net, val_set.samples, cfg.input_size, cfg.score_threshold,
                                device=device) if len(val_set) else {}
        row.update({f"val_{k}": v for k, v in val.items()})
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        # an epoch without a validation score (no validation boxes) counts as an improvement: the latest wins
        score = val.get("map50", math.nan)
        improved = not best or math.isnan(score) or score > best.get("val_map50", -1.0)
        if improved:
            best = {k: v for k, v in row.items() if k.startswith("val_") or k == "epoch"}
        # checkpoint first: whatever interrupts the writes below, --resume finds this epoch
        with atomic_path(ckpt_path) as tmp:
            torch.save({"kind": CHECKPOINT_KIND, "config": asdict(cfg), "epoch": epoch, "step": step,
                        "net": net.state_dict(), "ema": ema.net.state_dict(), "ema_updates": ema.updates,
                        "optimizer": opt.state_dict(), "history": history, "best": best}, tmp)
        _write_csv(csv_path, history, _columns(history))
        if improved:
            meta = {**record, "epochs": epoch, "planned_epochs": cfg.epochs, "steps": step, "val": dict(val),
                    "trained": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            save_detector_weights(ema.net, best_pt, (w, h), meta)
            export_detector_onnx(copy.deepcopy(ema.net).cpu(), best_onnx, (w, h))
        val_txt = " ".join(f"{k[4:]}={row[k]:.3f}" for k in row if k.startswith("val_map50") and "95" not in k)
        say(f"epoch {epoch}/{cfg.epochs} loss {row['loss']:.3f} (iou {row['iou']:.3f} obj {row['obj']:.3f} "
            f"cls {row['cls']:.3f}) lr {row['lr']:.2e} {val_txt} ({row['seconds']:.0f} s)")
    return DetectorTrainResult(best_pt, best_onnx, ckpt_path, csv_path, int(history[-1]["epoch"]) if history else 0,
                               history, best, time.perf_counter() - t_start)
