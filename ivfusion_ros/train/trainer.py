"""The training loop: AdamW, cosine schedule, AMP on CUDA, seeded, resumable, validated every epoch.

Reproducibility is by construction rather than by saving random states: the network is initialised from
``seed``, and the random crops of epoch ``e`` come from a generator seeded with ``(seed, e)``. A run resumed
from the checkpoint of epoch ``e`` therefore draws exactly the batches the uninterrupted run would have drawn,
and (with the optimizer, schedule and scaler states restored) ends with the same weights on the same device.

Each epoch writes ``last.pt`` (everything needed to resume) and a row of ``metrics.csv`` (mean losses of the
epoch and fusion metrics of the validation pairs); the end writes the weights file with its training record.
The illumination map and glare weight of every batch come from the same
:class:`~ivfusion_ros.core.illumination.IlluminationEstimator` that runs at inference.

With a detector (:attr:`TrainConfig.guide_detector`, a YOLOX-nano weights file) the networks whose papers are
detection-driven use it (:data:`DETECTOR_USES`): AMFusion's DSFM attends to its backbone (built into the
network, so the weights file carries it), TSJNet's joint-driven hook gets its loss against the batch's boxes
(:class:`~ivfusion_ros.train.fused_detection.DetectionTask`; the pairs then need labels). Other networks use a
detector only in the bilevel training (:mod:`~ivfusion_ros.train.bilevel`).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ivfusion_ros.config import IlluminationConfig
from ivfusion_ros.core.illumination import IlluminationEstimator
from ivfusion_ros.detect.nets.yolox import YoloxNano
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.eval.metrics import fusion_metrics
from ivfusion_ros.fusion.base import FusionContext
from ivfusion_ros.fusion.learned import run_padded
from ivfusion_ros.fusion.nets.losses import create_loss
from ivfusion_ros.fusion.nets.registry import create_net
from ivfusion_ros.fusion.nets.weights import save_weights
from ivfusion_ros.io.atomic import atomic_path
from ivfusion_ros.runtime.device import resolve_device
from ivfusion_ros.train.data import Pair, PairSet, load_pairs
from ivfusion_ros.train.fused_detection import (
    DEFAULT_DET_WEIGHT,
    DetectionTask,
    LabelledPairs,
    detector_record,
    load_guide_detector,
    load_labelled_pairs,
)

__all__ = ["BEST_BY", "CSV_COLUMNS", "DETECTOR_USES", "LOSS_TERMS", "VAL_EXTRA", "VAL_METRICS", "TrainConfig",
           "TrainResult", "best_score", "build_net", "check_detector_use", "csv_columns", "train"]

#: Fusion metrics computed on the validation pairs every epoch.
VAL_METRICS = ("EN", "SD", "SF", "VIF", "Qabf", "SSIM")
#: Loss terms of the AMFusion family, logged per epoch (each family logs its own: ``FusionLoss.term_names``).
LOSS_TERMS = ("intensity", "gradient", "ssim", "illumination", "glare")


#: Validation numbers that are not fusion metrics: ``dmax``, the mean absolute difference (grey levels) between the
#: output and the pixel-wise maximum of the sources: a network near 0 has collapsed to ``max`` and is no model.
VAL_EXTRA = ("dmax",)


#: Validation metrics whose sum picks the best epoch (``<variant>-best.pt``): the two the variants are judged on against
#: the ``max`` baseline, edges (Qabf) and information (VIF).
BEST_BY = ("VIF", "Qabf")


def best_score(row: dict[str, float]) -> float:
    """``sum(val_VIF, val_Qabf)`` of a ``metrics.csv`` row; NaN without validation."""
    vals = [row.get(f"val_{k}") for k in BEST_BY]
    return float(sum(vals)) if all(isinstance(v, float) and math.isfinite(v) for v in vals) else math.nan


def csv_columns(terms: Sequence[str] = LOSS_TERMS, diagnostics: Sequence[str] = ()) -> tuple[str, ...]:
    """Columns of ``metrics.csv`` for a loss with ``terms`` (0 when a term has weight 0) and a network that
    reports ``diagnostics`` (its ``DIAGNOSTICS``: codebook perplexity, gate statistics, ...), epoch means."""
    return ("epoch", "step", "lr", "loss", *terms, *diagnostics, *(f"val_{m}" for m in (*VAL_METRICS, *VAL_EXTRA)),
            "seconds")


#: Columns of ``metrics.csv`` of an AMFusion run.
CSV_COLUMNS = csv_columns()

#: What the plain training does with a detector, per network family (others: only ``--bilevel`` uses one).
DETECTOR_USES = {"amfusion": "DSFM guidance", "tsjnet": "detection loss"}

Progress = Callable[[int, int], None]


@dataclass
class TrainConfig:
    """What ``ivfusion train`` does; stored in every checkpoint so that ``--resume`` needs nothing else.

    Attributes:
        variant: network registry name, e.g. ``"amfusion-s"``.
        data: training data set folders.
        out: output folder (``last.pt``, ``metrics.csv``, ``<variant>.pt``).
        epochs: total epochs (a resumed run continues up to this number).
        steps: optimizer steps per epoch (0: one pass's worth, ``ceil(pairs / batch)``).
        batch, crop: batch size and square crop side in pixels.
        lr, weight_decay, min_lr_factor: AdamW learning rate, decay, and the cosine schedule's floor (x lr).
        seed: initialisation and sampling seed.
        val: validation data set folders (empty: the first ``val_pairs`` training pairs).
        val_pairs: validation pairs used per data set.
        loss: loss weights replacing the family's defaults (e.g. ``{"ssim": 0.0}``).
        net: network overrides for :func:`create_net` (e.g. tiny channels in tests).
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: torch CPU threads (0: leave torch's default).
        command: the command line, recorded in the weights' metadata.
        clip_model, clip_weights, clip_prompts: the CLIP model (open_clip name and local weights file) and the
            prompts of the ``clip_*`` loss terms (LDFusion); used only when such a term has a weight. Empty
            prompts: the paper's.
        guide_detector: a detector weights file (YOLOX-nano from ``ivfusion train-detector``; the shipped one is
            ``ivfusion_ros/detect/weights/ivdet-n.pt``), used as :data:`DETECTOR_USES` says, or by the bilevel
            training as its lower level. Empty: none.
        labels: labels of the training pairs for the detector's loss (tsjnet with a detector, ``--bilevel``),
            instead of each data set's ``labels/``.
    """

    variant: str = "amfusion-s"
    data: list[str] = field(default_factory=list)
    out: str = "train_out"
    epochs: int = 10
    steps: int = 0
    batch: int = 8
    crop: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    min_lr_factor: float = 0.05
    seed: int = 0
    val: list[str] = field(default_factory=list)
    val_pairs: int = 4
    loss: dict[str, float] = field(default_factory=dict)
    net: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    threads: int = 0
    command: str = ""
    clip_model: str = "ViT-B-32"
    clip_weights: str = ""
    clip_prompts: dict[str, str] = field(default_factory=dict)
    guide_detector: str = ""
    labels: str | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` for values the loop cannot run with."""
        for name, lo in (("epochs", 1), ("batch", 1), ("crop", 8), ("val_pairs", 0), ("steps", 0)):
            if getattr(self, name) < lo:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least {lo}, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")


@dataclass
class TrainResult:
    """Where the run left its files and how it ended (``best``: the weights of the best validation epoch by
    :data:`BEST_BY`, ``None`` without validation)."""

    weights: Path
    checkpoint: Path
    csv: Path
    epochs: int
    steps: int
    history: list[dict[str, float]]
    seconds: float
    best: Path | None = None


def _cosine(step: int, total: int, floor: float) -> float:
    t = min(step, total) / max(total, 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def _maps(est: IlluminationEstimator, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Illumination map and glare weight of ``vis`` at its own size, as the fuser gets them at inference."""
    ill = est(vis)
    return FusionContext(ill.map, ill.glare).maps_at(tuple(vis.shape[-2:]))


def _use_clip(guide: Any) -> contextlib.AbstractContextManager:
    from ivfusion_ros.fusion.nets.ldfusion_loss import use_clip

    return use_clip(guide)


def validate(net: torch.nn.Module, pairs: Sequence[Pair], device: torch.device,
             names: Sequence[str] = VAL_METRICS) -> dict[str, float]:
    """Mean fusion metrics (:func:`~ivfusion_ros.eval.metrics.fusion_metrics`) of ``net`` on whole ``pairs``."""
    if not pairs:
        return {}
    est = IlluminationEstimator(IlluminationConfig())
    was_training = net.training
    net.eval()
    sums: dict[str, float] = dict.fromkeys((*names, *VAL_EXTRA), 0.0)
    with torch.inference_mode():
        for p in pairs:
            ir = torch.from_numpy(p.ir)[None, None].to(device)
            vis = torch.from_numpy(p.vis)[None, None].to(device)
            illum, glare = _maps(est, vis)
            fused = run_padded(net, net.multiple, ir, vis, illum, glare)
            m = fusion_metrics(fused[0, 0].float().cpu().numpy() * 255.0, p.ir * 255.0, p.vis * 255.0, names)
            for k in names:
                sums[k] += float(m[k])  # plain floats: the weights file is read back with weights_only=True
            sums["dmax"] += float((fused - torch.maximum(ir, vis)).abs().mean()) * 255.0
    net.train(was_training)
    return {k: v / len(pairs) for k, v in sums.items()}


def _val_pairs(cfg: TrainConfig, data: PairSet) -> tuple[list[Pair], list[dict]]:
    if cfg.val_pairs == 0:
        return [], []
    if cfg.val:
        vs = load_pairs(cfg.val, limit=cfg.val_pairs)
        return vs.pairs, vs.sources
    return data.pairs[:cfg.val_pairs], [{"name": "training pairs", "pairs": min(cfg.val_pairs, len(data))}]


def epoch_row(epoch: int, step: int, lr: float, sums: dict[str, float], steps: int, net: torch.nn.Module,
              val: Sequence[Pair], device: torch.device, t0: float) -> dict[str, float]:
    """One ``metrics.csv`` row: mean losses of the epoch, validation metrics and the epoch's wall time."""
    row: dict[str, float] = {"epoch": epoch, "step": step, "lr": lr, **{k: v / steps for k, v in sums.items()}}
    row.update({f"val_{k}": v for k, v in validate(net, val, device).items()})
    row["seconds"] = time.perf_counter() - t0
    return row


def training_record(cfg: TrainConfig, training_data: Any, validation_data: Any, epochs: int, steps_per_epoch: int,
                    steps: int, device: torch.device, loss_weights: dict[str, float],
                    last: dict[str, float]) -> dict[str, Any]:
    """The ``meta`` of a weights file: what data, command, schedule and loss made it, and its last validation."""
    return {
        "variant": cfg.variant,
        "trained": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_data": training_data,
        "validation_data": validation_data,
        "command": cfg.command,
        "epochs": epochs,
        "planned_epochs": cfg.epochs,
        "steps_per_epoch": steps_per_epoch,
        "steps": steps,
        "batch": cfg.batch,
        "crop": cfg.crop,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "device": str(device),
        "loss_weights": dict(loss_weights),
        "val_metrics": {k: last[f"val_{k}"] for k in VAL_METRICS if f"val_{k}" in last},
        "torch": str(torch.__version__),  # a TorchVersion would not load with weights_only=True
    }


def _write_csv(path: Path, rows: list[dict[str, float]], columns: Sequence[str] = CSV_COLUMNS) -> None:
    """``metrics.csv``, rewritten whole each epoch (atomically: an interrupt leaves the previous epoch's file)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in columns})


def start_run(out: str | Path, threads: int, device: str) -> tuple[Path, torch.device]:
    """What every training run does first: its output folder (made), torch's CPU threads (0: left as they are) and
    the resolved device."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if threads > 0:
        torch.set_num_threads(threads)
    return folder, resolve_device(device)


def _load_checkpoint(path: Path, kind: str = "ivfusion-train-checkpoint",
                     what: str = "an ivfusion training checkpoint") -> dict[str, Any]:
    """The ``--resume`` checkpoint of kind ``kind``; a :class:`ModelError` naming the file otherwise."""
    if not path.is_file():
        raise ModelError(f"--resume: checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"--resume: cannot read checkpoint {path}: {type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise ModelError(f"--resume: {path} is not {what}")
    return ckpt


def _clip_guide(weights: dict[str, float], cfg: TrainConfig, device: torch.device,
                clip: Any | None) -> Any | None:
    """The CLIP guide of a loss with ``clip_*`` terms (LDFusion): ``clip`` if given, else loaded from ``cfg``."""
    from ivfusion_ros.fusion.nets import ldfusion_loss

    if not ldfusion_loss.uses_clip(weights):
        return None
    if clip is None:
        clip = ldfusion_loss.load_clip(cfg.clip_model, cfg.clip_weights, device, prompts=cfg.clip_prompts or None)
    return clip.to(device)


def check_detector_use(variant: str, bilevel: bool = False) -> str:
    """The family of ``variant`` if its training can use a detector (:data:`DETECTOR_USES`, or any with
    ``bilevel``).

    Raises:
        ConfigError: unknown network, or one whose plain training has no use for a detector (named, with what to
            use instead).
    """
    from ivfusion_ros.fusion.nets.registry import list_nets, net_info

    family = net_info(variant).family
    if not bilevel and family not in DETECTOR_USES:
        usable = [n for n in list_nets() if net_info(n).family in DETECTOR_USES]
        raise ConfigError(f"--guide-detector: {variant} ({family}) has no use for a detector in plain training; "
                          f"use it with --bilevel, or train one of {', '.join(usable)}")
    return family


def build_net(cfg: TrainConfig, detector: YoloxNano | None = None) -> torch.nn.Module:
    """``create_net(cfg.variant, **cfg.net)``, with ``detector`` (a ``YoloxNano``) as the DSFM guide of an AMFusion.

    The guide is passed here rather than in ``cfg.net``: the config must stay plain data (it is saved in every
    checkpoint); the network's own config records ``guide: yolox-nano``.
    """
    from ivfusion_ros.fusion.nets.registry import net_info

    extra = {"guide": detector} if detector is not None and net_info(cfg.variant).family == "amfusion" else {}
    return create_net(cfg.variant, **cfg.net, **extra)


def train(cfg: TrainConfig, resume: str | Path | None = None, progress: Progress | None = None,
          log: Callable[[str], None] | None = None, data: PairSet | LabelledPairs | None = None,
          stop_after: int | None = None, clip: Any | None = None,
          setup_net: Callable[[torch.nn.Module], None] | None = None) -> TrainResult:
    """Train ``cfg.variant`` and write checkpoints, ``metrics.csv`` and the final weights into ``cfg.out``.

    Args:
        cfg: the run. With ``resume``, the checkpoint's configuration is used and only ``epochs`` and ``out``
            are taken from ``cfg`` (to extend a run or write elsewhere).
        resume: a ``last.pt`` checkpoint to continue from (epoch counter, optimizer, schedule and history).
        progress: ``callback(done_steps, total_steps)``.
        log: receives one line per epoch.
        data: already loaded training pairs (tests); by default read from ``cfg.data``.
        stop_after: end after this epoch as if interrupted (checkpoint written, schedule still planned for
            ``cfg.epochs``); for time-boxed sessions and for testing ``resume``.
        clip: a :class:`~ivfusion_ros.fusion.nets.ldfusion_loss.ClipGuide` for the ``clip_*`` loss terms
            (default: loaded from ``cfg.clip_model``/``cfg.clip_weights`` when the loss has such terms).
        setup_net: called with the new network (on ``cfg.device``) before training, e.g. to attach task losses
            for joint-driven TSJNet training (``lambda net: net.attach_tasks(detection=...)``); what it attaches
            is not saved (pass it again when resuming). ``cfg.guide_detector`` does this for the package's
            detector (and is saved in the checkpoint's config, so a resumed run loads it again).

    With ``cfg.guide_detector`` and a tsjnet network, ``data`` must be
    :class:`~ivfusion_ros.train.fused_detection.LabelledPairs` and the loss's ``detection`` weight defaults to
    :data:`~ivfusion_ros.train.fused_detection.DEFAULT_DET_WEIGHT`.

    Raises:
        ConfigError: bad values, unknown variant, a detector the network cannot use, labels missing or with
            classes the detector does not have. ModelError: unreadable checkpoint or detector file.
        InputError: unreadable data.
    """
    t_start = time.perf_counter()
    ckpt = None
    if resume is not None:
        ckpt = _load_checkpoint(Path(resume))
        saved = TrainConfig(**ckpt["config"])
        saved.epochs, saved.out, saved.command = cfg.epochs, cfg.out, cfg.command or saved.command
        cfg = saved
    cfg.check()
    out, device = start_run(cfg.out, cfg.threads, cfg.device)
    amp = device.type == "cuda"

    detector: YoloxNano | None = None
    task: DetectionTask | None = None
    if cfg.guide_detector:
        family = check_detector_use(cfg.variant)
        detector, _ = load_guide_detector(cfg.guide_detector)
        if family == "tsjnet":
            cfg.loss.setdefault("detection", DEFAULT_DET_WEIGHT)
            task = DetectionTask(detector.to(device))
            if data is None:
                data = load_labelled_pairs(cfg.data, cfg.labels, min_side=cfg.crop, class_names=detector.class_names,
                                           detector=cfg.guide_detector, why=f"--guide-detector with {cfg.variant}")
            elif not isinstance(data, LabelledPairs):
                raise ConfigError("a tsjnet detection loss needs labelled pairs (LabelledPairs) as training data")
    data = data if data is not None else load_pairs(cfg.data, min_side=cfg.crop)
    if len(data) == 0:
        raise ConfigError("no training pairs")
    val, val_sources = _val_pairs(cfg, data)
    steps = cfg.steps or math.ceil(len(data) / cfg.batch)
    total = cfg.epochs * steps

    torch.manual_seed(cfg.seed)
    net = build_net(cfg, detector).to(device)
    if task is not None:
        net.attach_tasks(detection=task)
    if setup_net is not None:
        setup_net(net)
    loss_fn = create_loss(net.family, **cfg.loss)
    guide = _clip_guide(loss_fn.weights, cfg, device, clip)
    # active only while the loss is computed, so no state outlives the run (or an exception in it)
    loss_context = contextlib.nullcontext if guide is None else functools.partial(_use_clip, guide)
    # a frozen part (AMFusion's detector backbone) is no optimizer's business
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total, cfg.min_lr_factor))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict[str, float]] = []
    first_epoch, step = 1, 0
    if ckpt is not None:
        net.load_state_dict(ckpt["net"])
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        first_epoch, step = int(ckpt["epoch"]) + 1, int(ckpt["step"])
        history = [dict(r) for r in ckpt["history"]]
        # the schedule's horizon follows the (possibly extended) epoch count; its position is the step
        sched.last_epoch = step
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * _cosine(step, total, cfg.min_lr_factor)
    est = IlluminationEstimator(IlluminationConfig())
    csv_path, ckpt_path = out / "metrics.csv", out / "last.pt"
    best_path = out / f"{cfg.variant}-best.pt"
    best = max((best_score(r) for r in history if math.isfinite(best_score(r))), default=-math.inf)

    diagnostics = tuple(getattr(net, "DIAGNOSTICS", ()))  # what the network reports per training forward

    net.train()
    last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    for epoch in range(first_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        sums = dict.fromkeys(("loss", *loss_fn.term_names, *diagnostics), 0.0)
        for _ in range(steps):
            batch = data.sample(rng, cfg.batch, cfg.crop)
            ir, vis = (t.to(device, non_blocking=True) for t in batch[:2])
            if task is not None:  # the detection loss of this forward pass needs this batch's boxes
                task.set_batch(batch[2], batch[3])
            with torch.no_grad():
                illum, glare = _maps(est, vis)
            with torch.autocast(device.type, enabled=amp):
                fused = net(ir, vis, illum, glare)
            # terms the network computed itself in this forward pass (codebook commitment, reconstruction, ...)
            with loss_context():
                total_loss, parts = loss_fn(ir, vis, fused, illum, glare, getattr(net, "aux_losses", None))
            opt.zero_grad(set_to_none=True)
            scaler.scale(total_loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            sums["loss"] += float(total_loss.detach())
            for k, v in parts.items():
                sums[k] += v
            for k, v in getattr(net, "diagnostics", {}).items():  # what the network saw in this forward pass
                sums[k] += v
            if progress is not None:
                progress(step, total)
        row = epoch_row(epoch, step, opt.param_groups[0]["lr"], sums, steps, net, val, device, t0)
        history.append(row)
        _write_csv(csv_path, history, csv_columns(loss_fn.term_names, diagnostics))
        if best_score(row) > best:  # validation picks the epoch: later ones are not always better
            best = best_score(row)
            meta = training_record(cfg, data.sources, val_sources, epoch, steps, step, device, loss_fn.weights, row)
            meta["best_of"] = {"by": "+".join(f"val_{k}" for k in BEST_BY), "score": best, "epoch": epoch}
            with atomic_path(best_path) as tmp:
                save_weights(tmp, net.cpu(), meta)
            net.to(device)
        with atomic_path(ckpt_path) as tmp:  # a Ctrl-C while saving keeps the previous epoch's checkpoint
            torch.save({"kind": "ivfusion-train-checkpoint", "config": asdict(cfg), "epoch": epoch, "step": step,
                        "net": net.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                        "history": history}, tmp)
        if log is not None:
            val_txt = " ".join(f"{k}={row[f'val_{k}']:.3f}" for k in VAL_METRICS if f"val_{k}" in row)
            diag_txt = "".join(f" {k}={row[k]:.3g}" for k in diagnostics)
            log(f"epoch {epoch}/{cfg.epochs} loss {row['loss']:.4f} lr {row['lr']:.2e}{diag_txt} {val_txt} "
                f"dmax={row.get('val_dmax', math.nan):.2f} ({row['seconds']:.1f} s)")

    last = history[-1] if history else {}
    done = int(last.get("epoch", 0))
    meta = training_record(cfg, data.sources, val_sources, done, steps, step, device, loss_fn.weights, last)
    if guide is not None:
        meta["clip"] = {"model": cfg.clip_model, "weights": Path(cfg.clip_weights).name if cfg.clip_weights else "",
                        "prompts": dict(guide.prompts)}
    if detector is not None:
        meta["guide_detector"] = detector_record(cfg.guide_detector, detector, DETECTOR_USES[net.family])
    weights = save_weights(out / f"{cfg.variant}.pt", net.cpu(), meta)
    net.to(device)
    return TrainResult(weights, ckpt_path, csv_path, done, step, history, time.perf_counter() - t_start,
                       best_path if best_path.is_file() else None)
