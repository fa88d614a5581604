"""The package's detector in fusion training: labelled pairs, the class mapping, the detection loss of fused images.

``ivfusion train --guide-detector PATH`` takes a detector weights file (YOLOX-nano, written by
``ivfusion train-detector``; the shipped one is ``ivfusion_ros/detect/weights/ivdet-n.pt``). How each network uses
it follows its paper:

* **amfusion** (AMFusion): DSFM attends to the detector's stride-8 backbone features; the network copies that
  backbone (:class:`~ivfusion_ros.fusion.nets.amfusion.DetectorGuide`, frozen) and nothing here is involved.
* **tsjnet** (TSJNet, joint-driven): :class:`DetectionTask`, the frozen detector's loss of the fused batch
  against the batch's boxes, attached with ``net.attach_tasks(detection=task)``; the trainer hands it each
  batch's boxes before the forward pass.
* **--bilevel** (Text-to-Pixels): the detector is the lower level, fine-tuned on the fused images with
  :class:`FusedDetectionLoss`, whose value is also the upper level's ``L_det``
  (:mod:`~ivfusion_ros.train.bilevel`).

The detector sees what it sees at run time as closely as training allows: the fused luminance as three equal
channels (it was fine-tuned on grey thermal images that way), padded at the bottom and right to a multiple of
32 with the letterbox grey (114), which moves no box. The loss is the detector's own training loss
(:class:`~ivfusion_ros.detect.nets.yolox_loss.DetectionLoss`), so its gradient says what the detector needs
from the image. Label classes map onto the detector's classes by name (case-insensitive); a label class the
detector does not have is an error, never silently dropped. Pairs without a label file have no ground truth
(not "no objects") and take no part in the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ivfusion_ros.detect.nets.yolox import YoloxNano
from ivfusion_ros.detect.nets.yolox_loss import DetectionLoss
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.eval.dataset import open_datasets
from ivfusion_ros.io.images import read_thermal, read_visible
from ivfusion_ros.train.data import Pair, _decode

__all__ = ["DEFAULT_DET_WEIGHT", "Boxes", "DetectionTask", "FusedDetectionLoss", "LabelledPair", "LabelledPairs",
           "Targets", "detector_input", "detector_record", "load_guide_detector", "load_labelled_pairs", "to_targets"]

#: Weight of the detection loss in the fusion network's loss when none is given (``--det-weight``).
DEFAULT_DET_WEIGHT = 0.1
#: YOLOX input sides are multiples of this (the stride of the deepest level).
DET_MULTIPLE = 32
#: Padding value of the package's letterbox (``detect.letterbox``), as a fraction of 255.
PAD_VALUE = 114.0 / 255.0

Boxes = list[tuple[np.ndarray, np.ndarray]]  # per sample: (N, 4) x1 y1 x2 y2 pixels, (N,) detector class index
Targets = list[tuple[torch.Tensor, torch.Tensor]]  # per sample: boxes (M, 4) float, classes (M,) long


def load_guide_detector(path: str | Path) -> tuple[YoloxNano, dict[str, Any]]:
    """The detector of ``--guide-detector`` (eval mode, CPU) and its file's header.

    Raises:
        ModelError: missing, unreadable or not a detector weights file; the message names the file.
    """
    from ivfusion_ros.detect.ivdet import load_detector_weights

    try:
        return load_detector_weights(path)
    except ModelError as err:
        raise ModelError(f"--guide-detector: {err}") from None


def detector_record(path: str | Path, detector: YoloxNano, use: str) -> dict[str, object]:
    """What the weights' training record says about the detector (``meta["guide_detector"]``)."""
    return {"file": str(path), "classes": list(detector.class_names), "use": use}


def detector_input(fused: torch.Tensor) -> torch.Tensor:
    """Fused luminance ``(B, 1, H, W)`` -> the detector's ``(B, 3, H', W')`` RGB input, padded to multiples of 32."""
    h, w = fused.shape[-2:]
    ph, pw = (-h) % DET_MULTIPLE, (-w) % DET_MULTIPLE
    x = fused.expand(-1, 3, -1, -1)
    return F.pad(x, (0, pw, 0, ph), value=PAD_VALUE) if ph or pw else x


def to_targets(boxes: Boxes, device: torch.device) -> Targets:
    """Per-sample numpy boxes and classes -> the tensors :class:`DetectionLoss` takes."""
    return [(torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, 4),
             torch.as_tensor(c, dtype=torch.long, device=device).reshape(-1)) for b, c in boxes]


class FusedDetectionLoss:
    """``L_det``: a YOLOX detector's training loss on fused luminance images.

    ``loss(fused (B, 1, H, W), targets, labelled (B,) bool) -> (scalar, terms)``; only the labelled samples count,
    and a batch without any gives a zero that still depends on ``fused`` (so a backward pass is valid). The
    gradient reaches ``fused`` (hence the fusion network) and whichever detector parameters require it.
    """

    def __init__(self, detector: YoloxNano) -> None:
        self.detector = detector
        self.loss = DetectionLoss(detector.num_classes)

    def __call__(self, fused: torch.Tensor, targets: Targets, labelled: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        keep = [i for i, flag in enumerate(labelled.tolist()) if flag]
        if not keep:
            return fused.sum() * 0.0, {}
        x = detector_input(fused[keep] if len(keep) < fused.shape[0] else fused)
        raw = self.detector.raw(x)
        grid, strides = self.detector.grid(x.shape[-2], x.shape[-1], x.device)
        return self.loss(raw, grid, strides, [targets[i] for i in keep])


class DetectionTask:
    """TSJNet's joint-driven detection loss: ``task(fused) -> scalar``, for ``attach_tasks(detection=task)``.

    The detector is frozen here (``requires_grad`` off, eval mode): the detection loss must shape the fused image,
    not adapt the detector to it. :meth:`set_batch` gives it the boxes of the batch about to be fused; calling it
    without a batch is a bug and raises.
    """

    def __init__(self, detector: YoloxNano) -> None:
        detector.requires_grad_(False)
        self.detector = detector.eval()
        self.loss = FusedDetectionLoss(detector)
        self._batch: tuple[Targets, torch.Tensor] | None = None
        #: the loss terms of the last call (iou, obj, cls, fg), for inspection
        self.terms: dict[str, float] = {}

    def set_batch(self, boxes: Boxes, labelled: torch.Tensor) -> None:
        """The ground truth of the next fused batch (in the pixels of its crops)."""
        device = next(self.detector.parameters()).device
        self._batch = (to_targets(boxes, device), labelled)

    def __call__(self, fused: torch.Tensor) -> torch.Tensor:
        if self._batch is None:
            raise RuntimeError("DetectionTask: no batch targets; call set_batch(boxes, labelled) before the forward")
        targets, labelled = self._batch
        if len(targets) != fused.shape[0]:
            raise RuntimeError(f"DetectionTask: {len(targets)} targets for a batch of {fused.shape[0]}")
        loss, self.terms = self.loss(fused, targets, labelled)
        return loss


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
            if rng.random() < 0.5:  # horizontal only: the detector never saw upside-down people or cars
                a, v = a[:, ::-1], v[:, ::-1]
                bx = np.stack((crop - bx[:, 2], bx[:, 1], crop - bx[:, 0], bx[:, 3]), 1)
            ir[b, 0], vis[b, 0] = a, v
            out.append((bx.reshape(-1, 4).astype(np.float32), cl))
            labelled[b] = p.labelled
        return torch.from_numpy(ir), torch.from_numpy(vis), out, labelled


def load_labelled_pairs(paths: str | Sequence[str | Path], labels: str | None = None, min_side: int = 0,
                        class_names: Sequence[str] = ("person", "bicycle", "car"), detector: str = "the detector",
                        why: str = "--bilevel") -> LabelledPairs:
    """Read the pairs of ``paths`` with their boxes (the data sets' labels, or ``labels``), decoded for training.

    Args:
        class_names: the detector's classes; label classes map onto them by name (case-insensitive).
        detector: how error messages name the detector (its file).
        why: the option that needs labels, for the error messages.

    Raises:
        ConfigError: no pair of any data set has labels, or a box has a class the detector does not have (the
            message names the label file or class table).
    """
    datasets = open_datasets(paths, labels=labels)
    lookup = {n.casefold(): i for i, n in enumerate(class_names)}
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
                names = [gt.class_names[int(c)] if int(c) < len(gt.class_names) else f"#{int(c)}"
                         for c in gt.class_ids]
                unknown = sorted({n for n in names if n.casefold() not in lookup})
                if unknown:
                    table = ds.labels.classes_file if ds.labels and ds.labels.classes_file else gt.source
                    raise ConfigError(f"{why}: {table}: label class(es) {unknown} are not among the classes "
                                      f"{list(class_names)} of {detector}")
                boxes = gt.boxes.astype(np.float32).reshape(-1, 4)
                classes = np.array([lookup[n.casefold()] for n in names], np.int64)
            n_lab += labelled
            pairs.append(LabelledPair(f"{ds.name}/{p.name}", ir, vis, boxes, classes, labelled))
        sources.append({"name": ds.name, "path": str(ds.root or ds.vis_dir), "pairs": len(ds.pairs),
                        "labelled": n_lab})
    if not any(p.labelled for p in pairs):
        raise ConfigError(f"{why}: none of the training pairs has labels (give a data set with labels/ or "
                          "--labels DIR)")
    return LabelledPairs(pairs, sources)
