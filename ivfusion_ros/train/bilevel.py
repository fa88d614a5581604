"""Bilevel fusion-detection training (Text-to-Pixels, arXiv 2401.00421): ``ivfusion train --bilevel``.

The paper couples fusion and detection as a bilevel problem: the detector ``D`` (parameters ``theta``) is the
lower level, fitted to the current fused images, and the fusion network ``N`` (parameters ``phi``) is the upper
level, judged by its fusion loss *and* by how well the fitted detector does on its output::

    min_phi  L_fus(N_phi) + lambda L_det(D_theta*(phi), N_phi(ir, vis))
    s.t.     theta*(phi) = argmin_theta L_det(D_theta, N_phi(ir, vis))

``D`` is the package's own detector (YOLOX-nano, :mod:`ivfusion_ros.detect.nets.yolox`) loaded from a detector
weights file (``--guide-detector``; default the shipped ``detect/weights/ivdet-n.pt``), and ``L_det`` its own
training loss (:class:`~ivfusion_ros.detect.nets.yolox_loss.DetectionLoss`: SimOTA assignment, IoU, objectness
and class terms) on the fused luminance (:class:`~ivfusion_ros.train.fused_detection.FusedDetectionLoss`).
Solved, as usual, by alternating first-order updates per step (:func:`bilevel_step`), from one forward pass of
the fusion network (so the codebook's EMA update happens once per step):

1. **inner** (:func:`inner_step`): ``inner_steps`` updates of the detector on the *detached* fused image; only
   ``theta`` changes. By default only the detector's head is tuned (:attr:`BilevelConfig.tune`): a few hundred
   fused crops per epoch adapt the decision layers to fused images without eroding the backbone's pretrained
   features on tiny batches; ``tune="all"`` fits the whole detector.
2. **outer** (:func:`outer_step`): the detector is frozen (``requires_grad`` off) and ``phi`` takes one step on
   ``L_fus + lambda L_det``; only ``phi`` changes. The gradient of ``L_det`` w.r.t. ``phi`` flows through the
   whole detector and the fused image into the fusion network: detection tells fusion which structure matters.

The fine-tuned detector is saved beside the fusion weights as a detector weights file (``detector.pt``, the
format ``detector.type: ivdet`` loads), with the classes of the file it started from. Label classes map onto
the detector's by name; a class it does not have is an error. Only samples whose pair has a label file count
(the others have no ground truth, not "no objects"). Labels are the data sets' own (``DATASET/labels``, as
``ivfusion eval`` reads them) or ``--labels``. An AMFusion network trained this way is also DSFM-guided by the
same detector file (a frozen copy of its backbone taken before any fine-tuning, see
:class:`~ivfusion_ros.fusion.nets.amfusion.DetectorGuide`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ivfusion_ros.config import IlluminationConfig
from ivfusion_ros.core.illumination import IlluminationEstimator
from ivfusion_ros.detect.nets.yolox import YoloxNano
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion.nets.losses import FusionLoss, create_loss
from ivfusion_ros.fusion.nets.weights import save_weights
from ivfusion_ros.train.fused_detection import (
    Boxes,
    FusedDetectionLoss,
    LabelledPair,
    LabelledPairs,
    Targets,
    detector_record,
    load_guide_detector,
    load_labelled_pairs,
    to_targets,
)
from ivfusion_ros.train.trainer import (
    TrainConfig,
    TrainResult,
    _cosine,
    _maps,
    _val_pairs,
    _write_csv,
    build_net,
    csv_columns,
    epoch_row,
    start_run,
    training_record,
)

__all__ = ["TUNE", "BilevelConfig", "LabelledPair", "LabelledPairs", "bilevel_step", "inner_step",
           "load_labelled_pairs", "outer_step", "train_bilevel", "tuned_parameters"]

#: What the lower level fits: the detector's head, or all of it.
TUNE = ("head", "all")


def tuned_parameters(detector: YoloxNano, tune: str = "head") -> list[nn.Parameter]:
    """The detector parameters the lower level fits (:data:`TUNE`); the others stay frozen."""
    if tune not in TUNE:
        raise ConfigError(f"bilevel: tune must be one of {', '.join(TUNE)}, got {tune!r}")
    detector.requires_grad_(tune == "all")
    params = list(detector.parameters() if tune == "all" else detector.head.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def inner_step(det: FusedDetectionLoss, opt_det: torch.optim.Optimizer, fused: torch.Tensor, targets: Targets,
               labelled: torch.Tensor) -> float:
    """Lower level: one update of the detector on the fused image, which is detached (fusion untouched).

    A batch without labelled samples has nothing to fit: no update, loss 0.
    """
    if not bool(labelled.any()):
        return 0.0
    loss, _ = det(fused.detach(), targets, labelled)
    opt_det.zero_grad(set_to_none=True)
    loss.backward()
    opt_det.step()
    return float(loss.detach())


def outer_step(det: FusedDetectionLoss, opt_net: torch.optim.Optimizer, fused: torch.Tensor,
               fusion_loss: torch.Tensor, targets: Targets, labelled: torch.Tensor,
               det_weight: float) -> tuple[torch.Tensor, float]:
    """Upper level: the fusion network's update on ``fusion_loss + det_weight L_det`` with the detector frozen.

    Returns ``(total loss, detection loss)``. The detector's ``requires_grad`` flags are restored afterwards.
    """
    params = list(det.detector.parameters())
    flags = [p.requires_grad for p in params]
    det.detector.requires_grad_(False)
    try:
        loss, _ = det(fused, targets, labelled)
        total = fusion_loss + det_weight * loss
        opt_net.zero_grad(set_to_none=True)
        total.backward()
        opt_net.step()
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    return total, float(loss.detach())


def bilevel_step(net: nn.Module, det: FusedDetectionLoss, opt_net: torch.optim.Optimizer,
                 opt_det: torch.optim.Optimizer, loss_fn: FusionLoss, ir: torch.Tensor, vis: torch.Tensor,
                 illum: torch.Tensor, glare: torch.Tensor, boxes: Boxes, labelled: torch.Tensor,
                 det_weight: float = 0.1, inner_steps: int = 1) -> dict[str, float]:
    """One bilevel step: fuse once, ``inner_steps`` detector updates, then one fusion update (see the module doc).

    Returns the logged values: ``loss`` (upper-level total), the fusion terms, ``detection`` (upper level) and
    ``det_inner`` (the detector's loss before its last update).
    """
    fused = net(ir, vis, illum, glare)
    targets = to_targets(boxes, fused.device)
    labelled = labelled.to(fused.device)
    det_inner = 0.0
    for _ in range(inner_steps):
        det_inner = inner_step(det, opt_det, fused, targets, labelled)
    fus, parts = loss_fn(ir, vis, fused, illum, glare, getattr(net, "aux_losses", None))
    total, det_loss = outer_step(det, opt_net, fused, fus, targets, labelled, det_weight)
    return {"loss": float(total.detach()), **parts, "detection": det_loss, "det_inner": det_inner}


@dataclass
class BilevelConfig:
    """The bilevel options: detection weight ``lambda``, the detector's learning rate, inner steps, what it fits.

    The detector file is :attr:`TrainConfig.guide_detector` and the labels :attr:`TrainConfig.labels` (shared
    with the other detector-driven trainings).
    """

    det_weight: float = 0.1
    det_lr: float = 2e-4
    inner_steps: int = 1
    tune: str = "head"


def train_bilevel(cfg: TrainConfig, bcfg: BilevelConfig, progress: Callable[[int, int], None] | None = None,
                  log: Callable[[str], None] | None = None, data: LabelledPairs | None = None) -> TrainResult:
    """Train ``cfg.variant`` with alternating detector (inner) and fusion (outer) updates.

    The detector is ``cfg.guide_detector`` (default: the shipped ``ivdet-n.pt``). Writes ``metrics.csv`` (the
    fusion terms plus ``detection`` and ``det_inner``), the fusion weights ``<variant>.pt`` (training record with
    ``bilevel`` and ``guide_detector`` entries) and the fine-tuned detector ``detector.pt``
    (:attr:`TrainResult.checkpoint`). No ``--resume``: runs are short; the plain training keeps that feature.

    Raises:
        ModelError: the detector file is missing or unreadable. ConfigError: bad options, no labelled pairs, or
            label classes the detector does not have.
    """
    from ivfusion_ros.detect.ivdet import export_detector_onnx, save_detector_weights, shipped_model

    t_start = time.perf_counter()
    cfg.check()
    if bcfg.inner_steps < 1 or bcfg.det_weight < 0:
        raise ConfigError("--bilevel: inner steps must be >= 1 and the detection weight >= 0")
    if bcfg.tune not in TUNE:
        raise ConfigError(f"--bilevel: tune must be one of {', '.join(TUNE)}, got {bcfg.tune!r}")
    det_path = cfg.guide_detector or str(shipped_model("torch"))
    if not cfg.guide_detector and not Path(det_path).is_file():
        raise ModelError(f"--bilevel: the shipped detector {det_path} is missing; give a detector weights file "
                         "with --guide-detector PATH (ivfusion train-detector writes one)")
    detector, header = load_guide_detector(det_path)
    out, device = start_run(cfg.out, cfg.threads, cfg.device)
    if data is None:
        data = load_labelled_pairs(cfg.data, cfg.labels, min_side=cfg.crop, class_names=detector.class_names,
                                   detector=det_path)
    val, val_sources = _val_pairs(cfg, data)  # --val, or the first training pairs
    steps = cfg.steps or math.ceil(len(data) / cfg.batch)
    total = cfg.epochs * steps

    torch.manual_seed(cfg.seed)
    net = build_net(cfg, detector).to(device)  # an AMFusion copies the backbone now, before any fine-tuning
    detector.to(device).train()
    det = FusedDetectionLoss(detector)
    loss_fn = create_loss(net.family, **cfg.loss)
    opt_net = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                                weight_decay=cfg.weight_decay)
    opt_det = torch.optim.AdamW(tuned_parameters(detector, bcfg.tune), lr=bcfg.det_lr,
                                weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_net, lambda s: _cosine(s, total, cfg.min_lr_factor))
    est = IlluminationEstimator(IlluminationConfig())
    terms = (*loss_fn.term_names, "detection", "det_inner")
    diagnostics = tuple(getattr(net, "DIAGNOSTICS", ()))
    history: list[dict[str, float]] = []
    step = 0
    net.train()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        sums = dict.fromkeys(("loss", *terms, *diagnostics), 0.0)
        for _ in range(steps):
            ir, vis, boxes, labelled = data.sample(rng, cfg.batch, cfg.crop)
            ir, vis = ir.to(device), vis.to(device)
            with torch.no_grad():
                illum, glare = _maps(est, vis)
            vals = bilevel_step(net, det, opt_net, opt_det, loss_fn, ir, vis, illum, glare, boxes, labelled,
                                bcfg.det_weight, bcfg.inner_steps)
            sched.step()
            step += 1
            for k, v in (*vals.items(), *getattr(net, "diagnostics", {}).items()):
                sums[k] += v
            if progress is not None:
                progress(step, total)
        row = epoch_row(epoch, step, opt_net.param_groups[0]["lr"], sums, steps, net, val, device, t0)
        history.append(row)
        _write_csv(out / "metrics.csv", history, csv_columns(terms, diagnostics))
        if log is not None:
            diag_txt = "".join(f" {k}={row[k]:.3g}" for k in diagnostics)
            val_txt = "".join(f" {k[4:]}={v:.3f}" for k, v in row.items() if k.startswith("val_"))
            log(f"epoch {epoch}/{cfg.epochs} loss {row['loss']:.4f} detection {row['detection']:.3f} "
                f"lr {row['lr']:.2e}{diag_txt}{val_txt} ({row['seconds']:.1f} s)")
    last = history[-1]
    meta = training_record(cfg, data.sources, val_sources, cfg.epochs, steps,
                           step, device, loss_fn.weights, last)
    use = "lower-level detector" + (" and DSFM guidance" if net.family == "amfusion" else "")
    meta["guide_detector"] = detector_record(det_path, detector, use)
    meta["bilevel"] = {"det_weight": bcfg.det_weight, "det_lr": bcfg.det_lr, "inner_steps": bcfg.inner_steps,
                       "tune": bcfg.tune, "classes": list(detector.class_names),
                       "final_detection_loss": last["detection"]}
    weights = save_weights(out / f"{cfg.variant}.pt", net.cpu(), meta)
    size = header.get("input_size")
    det_size = tuple(size) if isinstance(size, list) and len(size) == 2 else (cfg.crop, cfg.crop)
    det_file = save_detector_weights(detector.cpu().eval(), out / "detector.pt", det_size,
                                     {"fine_tuned_from": str(det_path), "by": "ivfusion train --bilevel",
                                      "fusion_weights": weights.name, "command": cfg.command})
    try:  # ivdet's default backend (ONNX Runtime) loads the .onnx beside a .pt
        export_detector_onnx(detector, out / "detector.onnx", det_size)
    except ModelError as err:
        if log is not None:
            log(f"detector.onnx not written ({err}); detector.pt runs with detector.backend torch")
    net.to(device)
    return TrainResult(weights, det_file, out / "metrics.csv", cfg.epochs, step, history,
                       time.perf_counter() - t_start)
