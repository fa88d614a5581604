"""Bilevel fusion-detection training (Text-to-Pixels, arXiv 2401.00421): ``ivfusion train --bilevel``.

The paper couples fusion and detection as a bilevel problem: the detector ``D`` (parameters ``theta``) is the
lower level, fitted to the current fused images, and the fusion network ``N`` (parameters ``phi``) is the upper
level, judged by its fusion loss *and* by how well the fitted detector does on its output::

    min_phi  L_fus(N_phi) + lambda L_det(D_theta*(phi), N_phi(ir, vis))
    s.t.     theta*(phi) = argmin_theta L_det(D_theta, N_phi(ir, vis))

Solved, as usual, by alternating first-order updates per step (:func:`bilevel_step`), from one forward pass of
the fusion network (so the codebook's EMA update happens once per step):

1. **inner** (:func:`inner_step`): ``inner_steps`` updates of the detection head on the *detached* fused image;
   only ``theta`` changes.
2. **outer** (:func:`outer_step`): the head is frozen (``requires_grad`` off) and ``phi`` takes one step on
   ``L_fus + lambda L_det``; only ``phi`` changes. The gradient of ``L_det`` w.r.t. ``phi`` flows through the
   fused image into the fusion network: detection tells fusion which structure matters.

The detector is deliberately tiny (:class:`TinyDetHead`, a centre-heatmap head at stride 4 for ``person`` and
``vehicle``, CenterNet style): it exists to give the fusion network a detection signal during training and is
saved beside the weights (``det_head.pt``) for inspection, not shipped for inference.

Detection loss (:func:`detection_loss`), ``p = sigmoid(heat logits)``, ``Y`` the Gaussian centre heatmap (1 at
object centres), ``Npos`` the number of centres (at least 1):

* focal term ``-1/Npos sum[ Y=1: (1 - p)^2 log p ; else: (1 - Y)^4 p^2 log(1 - p) ]``: dense heatmaps have
  vastly more background than centres; the focal weights and the ``(1 - Y)^4`` penalty reduction near centres
  keep the background from drowning the objects.
* size term ``0.1/Npos sum_centres |s - log(box size / stride)|`` (width and height): a box, not only a point.

Only samples whose pair has a label file count (the others have no ground truth, not "no objects").
Labels are the data sets' own (``DATASET/labels``, as ``ivfusion eval`` reads them) or ``--labels``; class names
map to ``person`` and ``vehicle`` (car, bicycle, bus, truck, motorcycle, ...); other classes are ignored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.config import IlluminationConfig
from ivfusion_ros.core.illumination import IlluminationEstimator
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.eval.dataset import open_datasets
from ivfusion_ros.fusion.nets.losses import FusionLoss, create_loss
from ivfusion_ros.fusion.nets.registry import create_net
from ivfusion_ros.fusion.nets.weights import save_weights
from ivfusion_ros.io.images import read_thermal, read_visible
from ivfusion_ros.runtime.device import resolve_device
from ivfusion_ros.train.data import Pair, _decode
from ivfusion_ros.train.trainer import (
    TrainConfig,
    TrainResult,
    _cosine,
    _maps,
    _write_csv,
    csv_columns,
    epoch_row,
    training_record,
)

__all__ = ["DET_CLASSES", "BilevelConfig", "LabelledPair", "LabelledPairs", "TinyDetHead", "bilevel_step",
           "detection_loss", "detection_targets", "inner_step", "load_labelled_pairs", "outer_step",
           "train_bilevel"]

#: Classes of the detection head; data set class names map onto them (:data:`CLASS_MAP`).
DET_CLASSES = ("person", "vehicle")
CLASS_MAP = {"person": 0, "pedestrian": 0, "people": 0, "car": 1, "bicycle": 1, "bike": 1, "bus": 1, "truck": 1,
             "motorcycle": 1, "motorbike": 1, "motor": 1, "van": 1, "vehicle": 1}

Boxes = list[tuple[np.ndarray, np.ndarray]]  # per sample: (N, 4) x1 y1 x2 y2 pixels, (N,) class index


class TinyDetHead(nn.Module):
    """Centre-heatmap detector on a fused luminance image; ``forward(img (B, 1, H, W)) -> (heat, size)``.

    ``heat (B, C, H/4, W/4)`` are logits of object centres per class, ``size (B, 2, H/4, W/4)`` the log width and
    height of the box in stride units. The heat bias starts at ``log(0.01 / 0.99)`` (focal-loss prior), so the
    first steps do not spend themselves on suppressing the background.
    """

    stride = 4

    def __init__(self, width: int = 16, classes: int = len(DET_CLASSES)) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))

        self.body = nn.Sequential(conv(1, width, 2), conv(width, width), conv(width, 2 * width, 2),
                                  conv(2 * width, 2 * width), conv(2 * width, 2 * width))
        self.heat = nn.Conv2d(2 * width, classes, 1)
        self.size = nn.Conv2d(2 * width, 2, 1)
        nn.init.constant_(self.heat.bias, math.log(0.01 / 0.99))

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(img)
        return self.heat(f), self.size(f)


def detection_targets(boxes: Boxes, classes: int, h: int, w: int, stride: int = TinyDetHead.stride
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmap ``(B, C, h, w)``, size ``(B, 2, h, w)`` and centre mask ``(B, 1, h, w)`` targets at stride ``stride``.

    Each box puts a Gaussian (sigma = 1/6 of its larger side in cells, at least 0.7) at its centre cell, with
    value exactly 1 there; overlapping Gaussians take the maximum.
    """
    b = len(boxes)
    heat = np.zeros((b, classes, h, w), np.float32)
    size = np.zeros((b, 2, h, w), np.float32)
    mask = np.zeros((b, 1, h, w), np.float32)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    for i, (bx, cl) in enumerate(boxes):
        for (x1, y1, x2, y2), c in zip(bx, cl):
            bw, bh = (x2 - x1) / stride, (y2 - y1) / stride
            cx = min(max(int((x1 + x2) / 2 / stride), 0), w - 1)
            cy = min(max(int((y1 + y2) / 2 / stride), 0), h - 1)
            sigma = max(0.7, max(bw, bh) / 6.0)
            g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))
            heat[i, c] = np.maximum(heat[i, c], g)
            size[i, :, cy, cx] = np.log(max(bw, 1e-2)), np.log(max(bh, 1e-2))
            mask[i, 0, cy, cx] = 1.0
    return torch.from_numpy(heat), torch.from_numpy(size), torch.from_numpy(mask)


def detection_loss(heat_logits: torch.Tensor, size_pred: torch.Tensor,
                   targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor], labelled: torch.Tensor,
                   size_weight: float = 0.1) -> torch.Tensor:
    """Focal heatmap loss plus ``size_weight`` x L1 size loss (formulas in the module docstring).

    ``labelled (B,)`` bool: samples without ground truth contribute nothing (a batch of only those gives 0).
    """
    heat_t, size_t, mask = (t.to(heat_logits) for t in targets)
    keep = labelled.to(heat_logits).reshape(-1, 1, 1, 1)
    logp, log1mp = F.logsigmoid(heat_logits), F.logsigmoid(-heat_logits)
    p = torch.sigmoid(heat_logits)
    pos = (heat_t >= 1.0).to(heat_logits)
    focal = pos * (1 - p) ** 2 * logp + (1 - pos) * (1 - heat_t) ** 4 * p**2 * log1mp
    n_pos = (pos * keep).sum().clamp_min(1.0)
    size = (mask * keep * (size_pred - size_t).abs()).sum()
    return -(focal * keep).sum() / n_pos + size_weight * size / n_pos


def inner_step(head: nn.Module, opt_head: torch.optim.Optimizer, fused: torch.Tensor,
               targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor], labelled: torch.Tensor) -> float:
    """Lower level: one update of the detection head on the fused image, which is detached (fusion untouched)."""
    loss = detection_loss(*head(fused.detach()), targets, labelled)
    opt_head.zero_grad(set_to_none=True)
    loss.backward()
    opt_head.step()
    return float(loss.detach())


def outer_step(head: nn.Module, opt_net: torch.optim.Optimizer, fused: torch.Tensor, fusion_loss: torch.Tensor,
               targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor], labelled: torch.Tensor,
               det_weight: float) -> tuple[torch.Tensor, float]:
    """Upper level: the fusion network's update on ``fusion_loss + det_weight L_det`` with the head frozen.

    Returns ``(total loss, detection loss)``. The head's ``requires_grad`` is restored afterwards.
    """
    flags = [p.requires_grad for p in head.parameters()]
    head.requires_grad_(False)
    try:
        det = detection_loss(*head(fused), targets, labelled)
        total = fusion_loss + det_weight * det
        opt_net.zero_grad(set_to_none=True)
        total.backward()
        opt_net.step()
    finally:
        for p, f in zip(head.parameters(), flags):
            p.requires_grad_(f)
    return total, float(det.detach())


def bilevel_step(net: nn.Module, head: nn.Module, opt_net: torch.optim.Optimizer, opt_head: torch.optim.Optimizer,
                 loss_fn: FusionLoss, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor,
                 boxes: Boxes, labelled: torch.Tensor, det_weight: float = 0.1, inner_steps: int = 1
                 ) -> dict[str, float]:
    """One bilevel step: fuse once, ``inner_steps`` head updates, then one fusion update (see the module doc).

    Returns the logged values: ``loss`` (upper-level total), the fusion terms, ``detection`` (upper level) and
    ``det_inner`` (the head's loss before its last update).
    """
    fused = net(ir, vis, illum, glare)
    hm = (fused.shape[-2] + TinyDetHead.stride - 1) // TinyDetHead.stride
    wm = (fused.shape[-1] + TinyDetHead.stride - 1) // TinyDetHead.stride
    targets = tuple(t.to(fused.device) for t in detection_targets(boxes, len(DET_CLASSES), hm, wm))
    labelled = labelled.to(fused.device)
    det_inner = 0.0
    for _ in range(inner_steps):
        det_inner = inner_step(head, opt_head, fused, targets, labelled)
    fus, parts = loss_fn(ir, vis, fused, illum, glare, getattr(net, "aux_losses", None))
    total, det = outer_step(head, opt_net, fused, fus, targets, labelled, det_weight)
    return {"loss": float(total.detach()), **parts, "detection": det, "det_inner": det_inner}


@dataclass
class LabelledPair(Pair):
    """A training pair with its boxes (pixels of the decoded images) and whether it had a label file."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    labelled: bool = False


@dataclass
class LabelledPairs:
    """Pairs with boxes; :meth:`sample` crops like :class:`~ivfusion_ros.train.data.PairSet` and moves the boxes."""

    pairs: list[LabelledPair]
    sources: list[dict] = field(default_factory=list)
    object_crop: float = 0.8  # share of crops of labelled pairs that are centred around some object

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, rng: np.random.Generator, batch: int, crop: int
               ) -> tuple[torch.Tensor, torch.Tensor, Boxes, torch.Tensor]:
        """``(ir, vis, boxes, labelled)``: ``batch`` random crops (flipped at random), boxes clipped to the crop
        and kept when their centre lies inside it."""
        ir = np.empty((batch, 1, crop, crop), np.float32)
        vis = np.empty_like(ir)
        out: Boxes = []
        labelled = torch.zeros(batch, dtype=torch.bool)
        for b in range(batch):
            p = self.pairs[int(rng.integers(len(self.pairs)))]
            h, w = p.ir.shape
            if len(p.boxes) and rng.random() < self.object_crop:
                x1, y1, x2, y2 = p.boxes[int(rng.integers(len(p.boxes)))]
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                x = int(np.clip(cx - rng.uniform(0.2, 0.8) * crop, 0, w - crop))
                y = int(np.clip(cy - rng.uniform(0.2, 0.8) * crop, 0, h - crop))
            else:
                y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            a, v = p.ir[y:y + crop, x:x + crop], p.vis[y:y + crop, x:x + crop]
            bx = p.boxes - np.array([x, y, x, y], np.float32)
            centre = (bx[:, :2] + bx[:, 2:]) / 2
            inside = (centre >= 0).all(1) & (centre < crop).all(1)
            bx, cl = np.clip(bx[inside], 0, crop), p.classes[inside]
            if rng.random() < 0.5:
                a, v = a[:, ::-1], v[:, ::-1]
                bx = np.stack((crop - bx[:, 2], bx[:, 1], crop - bx[:, 0], bx[:, 3]), 1)
            if rng.random() < 0.5:
                a, v = a[::-1], v[::-1]
                bx = np.stack((bx[:, 0], crop - bx[:, 3], bx[:, 2], crop - bx[:, 1]), 1)
            ir[b, 0], vis[b, 0] = a, v
            out.append((bx.reshape(-1, 4).astype(np.float32), cl))
            labelled[b] = p.labelled
        return torch.from_numpy(ir), torch.from_numpy(vis), out, labelled


def load_labelled_pairs(paths: str | Sequence[str | Path], labels: str | None = None,
                        min_side: int = 0) -> LabelledPairs:
    """Read the pairs of ``paths`` with their boxes (the data sets' labels, or ``labels``), decoded for training.

    Raises:
        ConfigError: no pair of any data set has labels (bilevel training needs some).
    """
    datasets = open_datasets(paths, labels=labels)
    pairs: list[LabelledPair] = []
    sources: list[dict] = []
    for ds in datasets:
        n_lab = 0
        for p in ds.pairs:
            vis_rgb = read_visible(p.vis)
            ir, vis = _decode(read_thermal(p.ir), vis_rgb, min_side)
            boxes, classes, labelled = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), False
            gt = ds.ground_truth(p.name, (vis_rgb.shape[1], vis_rgb.shape[0]), (vis.shape[1], vis.shape[0]))
            if gt is not None and p.name not in ds.missing_labels:
                labelled = True
                names = [gt.class_names[int(c)].lower() if int(c) < len(gt.class_names) else "" for c in gt.class_ids]
                keep = [i for i, n in enumerate(names) if n in CLASS_MAP]
                boxes = gt.boxes[keep].astype(np.float32).reshape(-1, 4)
                classes = np.array([CLASS_MAP[names[i]] for i in keep], np.int64)
            n_lab += labelled
            pairs.append(LabelledPair(f"{ds.name}/{p.name}", ir, vis, boxes, classes, labelled))
        sources.append({"name": ds.name, "path": str(ds.root or ds.vis_dir), "pairs": len(ds.pairs),
                        "labelled": n_lab})
    if not any(p.labelled for p in pairs):
        raise ConfigError("--bilevel: none of the training pairs has labels (give a data set with labels/ or "
                          "--labels DIR)")
    return LabelledPairs(pairs, sources)


@dataclass
class BilevelConfig:
    """The bilevel options: labels folder, detection weight ``lambda``, head learning rate and inner steps."""

    labels: str | None = None
    det_weight: float = 0.1
    head_lr: float = 2e-3
    inner_steps: int = 1
    head_width: int = 16


def train_bilevel(cfg: TrainConfig, bcfg: BilevelConfig, progress: Callable[[int, int], None] | None = None,
                  log: Callable[[str], None] | None = None, data: LabelledPairs | None = None) -> TrainResult:
    """Train ``cfg.variant`` with alternating detection-head (inner) and fusion (outer) updates.

    Writes ``metrics.csv`` (the fusion terms plus ``detection`` and ``det_inner``), the fusion weights
    ``<variant>.pt`` (training record with a ``bilevel`` entry) and ``det_head.pt``. No ``--resume``: runs are
    short; the plain training keeps that feature.
    """
    t_start = time.perf_counter()
    cfg.check()
    if bcfg.inner_steps < 1 or bcfg.det_weight < 0:
        raise ConfigError("--bilevel: inner steps must be >= 1 and the detection weight >= 0")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    data = data if data is not None else load_labelled_pairs(cfg.data, bcfg.labels, min_side=cfg.crop)
    val = data.pairs[:cfg.val_pairs]
    steps = cfg.steps or math.ceil(len(data) / cfg.batch)
    total = cfg.epochs * steps

    torch.manual_seed(cfg.seed)
    net = create_net(cfg.variant, **cfg.net).to(device)
    head = TinyDetHead(bcfg.head_width).to(device)
    loss_fn = create_loss(net.family, **cfg.loss)
    opt_net = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt_head = torch.optim.AdamW(head.parameters(), lr=bcfg.head_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_net, lambda s: _cosine(s, total, cfg.min_lr_factor))
    est = IlluminationEstimator(IlluminationConfig())
    terms = (*loss_fn.term_names, "detection", "det_inner")
    history: list[dict[str, float]] = []
    step = 0
    net.train()
    head.train()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        sums = dict.fromkeys(("loss", *terms), 0.0)
        for _ in range(steps):
            ir, vis, boxes, labelled = data.sample(rng, cfg.batch, cfg.crop)
            ir, vis = ir.to(device), vis.to(device)
            with torch.no_grad():
                illum, glare = _maps(est, vis)
            vals = bilevel_step(net, head, opt_net, opt_head, loss_fn, ir, vis, illum, glare, boxes, labelled,
                                bcfg.det_weight, bcfg.inner_steps)
            sched.step()
            step += 1
            for k, v in vals.items():
                sums[k] += v
            if progress is not None:
                progress(step, total)
        row = epoch_row(epoch, step, opt_net.param_groups[0]["lr"], sums, steps, net, val, device, t0)
        history.append(row)
        _write_csv(out / "metrics.csv", history, csv_columns(terms))
        if log is not None:
            log(f"epoch {epoch}/{cfg.epochs} loss {row['loss']:.4f} detection {row['detection']:.3f} "
                f"lr {row['lr']:.2e} ({row['seconds']:.1f} s)")
    last = history[-1]
    meta = training_record(cfg, data.sources, [{"name": "training pairs", "pairs": len(val)}], cfg.epochs, steps,
                           step, device, loss_fn.weights, last)
    meta["bilevel"] = {"det_weight": bcfg.det_weight, "head_lr": bcfg.head_lr, "inner_steps": bcfg.inner_steps,
                       "head_width": bcfg.head_width, "classes": list(DET_CLASSES),
                       "final_detection_loss": last["detection"]}
    weights = save_weights(out / f"{cfg.variant}.pt", net.cpu(), meta)
    head_path = out / "det_head.pt"
    torch.save({"classes": list(DET_CLASSES), "width": bcfg.head_width, "stride": TinyDetHead.stride,
                "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()}}, head_path)
    net.to(device)
    return TrainResult(weights, head_path, out / "metrics.csv", cfg.epochs, step, history,
                       time.perf_counter() - t_start)
