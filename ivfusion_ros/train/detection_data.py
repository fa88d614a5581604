"""Labelled detection data for ``ivfusion train-detector``: what the detector sees at run time, plus augmentation.

A data file (YAML) lists data sets and, for each, which inputs the detector is trained on::

    classes: [person, bicycle, car]
    train:
      - {root: /data/msrs/train, inputs: [fused, ir, vis], repeat: 3}   # registered pairs: ir/ + vi/
      - {root: /data/msrs/ir_train, inputs: [ir]}            # thermal only: ir/
    val:
      - {root: /data/msrs/val, inputs: [fused, ir, vis]}

``repeat`` (default 1) shows a data set's images that many times per epoch (each time augmented differently): a
way to weight a small set of paired images against a large thermal-only one.

Each data set holds ``ir/`` and/or ``vi/`` (the folder names :mod:`ivfusion_ros.eval.dataset` accepts) and YOLO
labels: ``labels/{fusion,infrared,visible}/NAME.txt`` when the boxes were annotated per modality (fused inputs
take ``fusion``, thermal ``infrared``, visible ``visible``), else ``labels/NAME.txt`` for all; class names in
``labels/classes.txt``. Label classes are matched to the detector's by name.

The images are made the way the pipeline makes them at run time, so the detector trains on what it will see:
``fused`` is :class:`~ivfusion_ros.pipeline.Pipeline` output with the configured fusion (``fused:max``,
``fused:amfusion``...: with that variant instead, so one detector learns several), ``ir`` the pipeline's
normalised, registered thermal (grey, three equal channels), ``vis`` the visible image. They are computed once
at load time and kept as uint8.

Bad data never passes silently: a malformed label line is an :class:`~ivfusion_ros.errors.InputError` naming
``file:line``; an image that cannot be read and an image without a label file are skipped and counted in
:attr:`DetectionSet.skipped` (reported by the trainer); a data set with no usable image is an error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval.dataset import IR_DIR_NAMES, VIS_DIR_NAMES, find_image_dir, find_yolo_classes, image_files
from ivfusion_ros.eval.labels import load_yolo, load_yolo_classes
from ivfusion_ros.fusion.registry import list_fusers
from ivfusion_ros.io.images import read_thermal, read_visible
from ivfusion_ros.pipeline import Pipeline

__all__ = ["INPUTS", "LABEL_SUBDIRS", "Augment", "DataSpec", "DetSample", "DetectionSet", "collate",
           "known_variants", "load_detection_set", "read_data_file"]

#: Images a detector can be trained on: the fused image, thermal alone, visible alone. ``fused:VARIANT`` (e.g.
#: ``fused:max``) is the image of another fusion variant than the configured one, so that one detector can serve
#: several variants.
INPUTS = ("fused", "ir", "vis")
#: Per-modality label folder of each input (MSRS's annotation layout).
LABEL_SUBDIRS = {"fused": "fusion", "ir": "infrared", "vis": "visible"}


def known_variants() -> list[str]:
    """Fusion variants ``fused:VARIANT`` can name."""
    return [f.name for f in list_fusers()]


def _kind(inp: str) -> str:
    """``"fused:max"`` -> ``"fused"``."""
    return inp.partition(":")[0]
PAD = 114


@dataclass
class DetSample:
    """One training image: ``image`` ``(H, W, 3)`` uint8 RGB, ``boxes`` ``(N, 4)`` xyxy pixels, ``classes`` ``(N,)``."""

    name: str
    input: str
    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class DataSpec:
    root: Path
    inputs: tuple[str, ...]
    repeat: int = 1


@dataclass
class DetectionSet:
    """Samples of one or more data sets, with what was skipped and why (reason -> count)."""

    samples: list[DetSample] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    sources: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def by_input(self) -> dict[str, list[DetSample]]:
        out: dict[str, list[DetSample]] = {}
        for s in self.samples:
            out.setdefault(s.input, []).append(s)
        return out


def read_data_file(path: str | Path) -> tuple[tuple[str, ...], list[DataSpec], list[DataSpec]]:
    """Parse a data file: ``(class names, train specs, val specs)``; relative roots are relative to the file.

    Raises:
        ConfigError: the file is missing, not YAML, or a key or input name is wrong (the message names it).
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--data: file not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"--data: cannot read {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--data: {path} must be a mapping with 'classes', 'train' and 'val'")
    unknown = set(doc) - {"classes", "train", "val"}
    if unknown:
        raise ConfigError(f"--data: {path}: unknown key(s) {sorted(unknown)}; expected classes, train, val")
    classes = doc.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError(f"--data: {path}: 'classes' must be a list of class names")

    def specs(key: str) -> list[DataSpec]:
        items = doc.get(key) or []
        if not isinstance(items, list) or not items:
            raise ConfigError(f"--data: {path}: '{key}' must list at least one data set")
        out = []
        for k, item in enumerate(items):
            if not isinstance(item, dict) or "root" not in item:
                raise ConfigError(f"--data: {path}: {key}[{k}] needs 'root' (and optionally 'inputs', 'repeat')")
            extra = set(item) - {"root", "inputs", "repeat"}
            if extra:
                raise ConfigError(f"--data: {path}: {key}[{k}]: unknown key(s) {sorted(extra)}")
            repeat = item.get("repeat", 1)
            if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
                raise ConfigError(f"--data: {path}: {key}[{k}]: repeat must be a positive integer, got {repeat!r}")
            if key == "val" and repeat != 1:
                raise ConfigError(f"--data: {path}: val[{k}]: repeat is for training sets (validation counts each "
                                  "image once)")
            inputs = tuple(str(i) for i in item.get("inputs") or INPUTS)
            for i in inputs:
                kind, _, variant = i.partition(":")
                if kind not in INPUTS or (variant and kind != "fused"):
                    raise ConfigError(f"--data: {path}: {key}[{k}]: unknown input {i!r}; valid: "
                                      f"{', '.join(INPUTS)}, fused:VARIANT")
                if variant and variant not in known_variants():
                    raise ConfigError(f"--data: {path}: {key}[{k}]: {i!r}: unknown fusion variant {variant!r}; "
                                      f"valid: {', '.join(known_variants())}")
            root = Path(str(item["root"])).expanduser()
            out.append(DataSpec(root if root.is_absolute() else path.parent / root, inputs, repeat))
        return out

    return tuple(classes), specs("train"), specs("val")


def _images(root: Path, names: Sequence[str], what: str) -> dict[str, Path]:
    """The images of ``root``'s thermal or visible folder by stem; none when the folder does not exist."""
    try:
        return image_files(find_image_dir(root, names, what))
    except InputError as err:
        if err.reason == "missing":
            return {}
        raise


def _label_dir(root: Path, inp: str) -> Path:
    base = root / "labels"
    sub = base / LABEL_SUBDIRS[_kind(inp)]
    if sub.is_dir():
        return sub
    if base.is_dir():
        return base
    raise InputError(f"{root}: no labels/ folder (YOLO txt files, one per image)", reason="missing")


def _class_map(label_dir: Path, root: Path, class_names: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The label files' class table and its mapping onto ``class_names`` (by name, case-insensitive)."""
    cand = find_yolo_classes(label_dir, root, None, hint="add one with a class name per line")
    names = load_yolo_classes(cand)
    lookup = {n.casefold(): i for i, n in enumerate(class_names)}
    missing = [n for n in names if n.casefold() not in lookup]
    if missing:
        raise ConfigError(f"{cand}: class(es) {missing} are not among the detector's classes {list(class_names)}")
    return names, np.array([lookup[n.casefold()] for n in names], np.int64)


def load_detection_set(specs: Sequence[DataSpec], class_names: Sequence[str], cfg: PipelineConfig | None = None,
                       limit: int | None = None) -> DetectionSet:
    """Read the data sets of ``specs`` and make every requested input image the way the pipeline does.

    Args:
        specs: data sets and their inputs (:func:`read_data_file`).
        class_names: the detector's classes; label classes map onto them by name.
        cfg: pipeline configuration for the fused and thermal images (default: the package defaults).
        limit: at most this many images per data set (tests, quick runs).

    Raises:
        InputError: a folder, ``classes.txt`` or every image of a data set is missing, or a label line is
            malformed (``file:line``). ConfigError: label classes the detector does not have.
    """
    cfg = update_config(cfg or PipelineConfig(), **{"detector.type": "none"})
    pipes = _Pipelines(cfg)
    out = DetectionSet()
    for spec in specs:
        if not spec.root.is_dir():
            raise InputError(f"data set folder not found: {spec.root}", reason="missing")
        ir = _images(spec.root, IR_DIR_NAMES, "thermal")
        vis = _images(spec.root, VIS_DIR_NAMES, "visible")
        need_ir = any(_kind(i) in ("fused", "ir") for i in spec.inputs)
        need_vis = any(_kind(i) in ("fused", "vis") for i in spec.inputs)
        if need_ir and not ir:
            raise InputError(f"{spec.root}: inputs {list(spec.inputs)} need thermal images in one of "
                             f"{'/'.join(IR_DIR_NAMES)}/, found none", reason="missing")
        if need_vis and not vis:
            raise InputError(f"{spec.root}: inputs {list(spec.inputs)} need visible images in one of "
                             f"{'/'.join(VIS_DIR_NAMES)}/, found none", reason="missing")
        names = sorted((set(ir) if need_ir else set(vis)) & (set(vis) if need_vis else set(ir)))
        unpaired = len(set(ir) ^ set(vis)) if need_ir and need_vis else 0
        if unpaired:
            out.skipped["unpaired image"] += unpaired
        names = names[:limit] if limit else names
        maps = {inp: (_label_dir(spec.root, inp), *_class_map(_label_dir(spec.root, inp), spec.root, class_names))
                for inp in spec.inputs}
        before = len(out.samples)
        for name in names:
            labels = {}
            for inp, (folder, table, to_ours) in maps.items():
                f = folder / f"{name}.txt"
                if not f.exists():
                    out.skipped[f"no label file ({LABEL_SUBDIRS[_kind(inp)]})"] += 1
                    continue
                labels[inp] = (f, table, to_ours)
            if not labels:
                continue
            try:
                images = pipes.make(ir.get(name), vis.get(name), tuple(labels))
            except InputError:
                out.skipped["unreadable image"] += 1
                continue
            for inp, (f, table, to_ours) in labels.items():
                img = images[inp]
                gt = load_yolo(f, (img.shape[1], img.shape[0]), table)
                out.samples.append(DetSample(name, inp, img, gt.boxes.astype(np.float32), to_ours[gt.class_ids]))
        if len(out.samples) == before:
            raise InputError(f"{spec.root}: no usable labelled image (skipped: {dict(out.skipped)})", reason="empty")
        counts = Counter(s.input for s in out.samples[before:])
        out.samples.extend(out.samples[before:] * (spec.repeat - 1))  # the same arrays: no extra memory
        out.sources.append({"root": str(spec.root), "images": len(names), "samples": dict(counts),
                            "repeat": spec.repeat})
    return out


class _Pipelines:
    """One :class:`~ivfusion_ros.pipeline.Pipeline` for the configured fusion and one per other ``fused:VARIANT``."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self._pipes: dict[str, Pipeline] = {"": Pipeline(cfg)}

    def _pipe(self, variant: str) -> Pipeline:
        if variant not in self._pipes:
            self._pipes[variant] = Pipeline(update_config(self.cfg, **{"fusion.variant": variant,
                                                                       "fusion.variant_day": "",
                                                                       "fusion.variant_night": ""}))
        return self._pipes[variant]

    def make(self, ir_path: Path | None, vis_path: Path | None, inputs: Sequence[str]) -> dict[str, np.ndarray]:
        """The images of ``inputs`` for one pair (or single image), made as the node makes them.

        Thermal alone is the pipeline's thermal-only path (its own geometry, as degraded mode shows it); thermal of
        a pair is the registered thermal (the RGB geometry, in which paired labels are given).
        """
        kinds = {_kind(i) for i in inputs}
        pipe = self._pipe("")
        pipe.reset()  # unrelated images: no AGC smoothing from the previous one
        if kinds == {"ir"} or vis_path is None:
            assert ir_path is not None
            return {"ir": pipe.process_single(read_thermal(ir_path), "thermal").fused}
        rgb = read_visible(vis_path)
        if kinds == {"vis"} or ir_path is None:
            return {"vis": rgb}
        thermal = read_thermal(ir_path)
        res = pipe.process(thermal, rgb, keep_inputs=True)
        assert res.thermal is not None and res.rgb is not None
        out = {"fused": res.fused, "ir": np.repeat(res.thermal[:, :, None], 3, axis=2), "vis": res.rgb}
        for inp in inputs:
            if ":" in inp:
                other = self._pipe(inp.partition(":")[2])
                other.reset()
                out[inp] = other.process(thermal, rgb).fused
        return out


# ------------------------------------------------------------------------------------------- augmentation


@dataclass
class Augment:
    """Training augmentation: mosaic of four images, random scale, horizontal flip, photometric jitter.

    Attributes:
        width, height: network input size.
        mosaic: probability of a four-image mosaic (else one letterboxed image).
        scale: random zoom range around the letterbox scale.
        photometric: brightness/contrast/gamma jitter strength (0 = off); also blur and grey-out of colour images.
    """

    width: int = 416
    height: int = 320
    mosaic: float = 0.5
    scale: tuple[float, float] = (0.6, 1.5)
    photometric: float = 0.3
    min_box: float = 2.0

    def __call__(self, rng: np.random.Generator, samples: Sequence[DetSample], index: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if rng.random() < self.mosaic:
            picks = [index, *rng.integers(0, len(samples), 3).tolist()]
            img, boxes, cls = self._mosaic(rng, [samples[i] for i in picks])
        else:
            img, boxes, cls = self._single(rng, samples[index])
        if rng.random() < 0.5:
            img = img[:, ::-1]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = self.width - boxes[:, [2, 0]]
        img = self._photometric(rng, np.ascontiguousarray(img))
        return img, boxes, cls

    def _scaled(self, rng: np.random.Generator, s: DetSample) -> tuple[np.ndarray, np.ndarray]:
        h, w = s.image.shape[:2]
        r = min(self.width / w, self.height / h) * math.exp(rng.uniform(math.log(self.scale[0]),
                                                                         math.log(self.scale[1])))
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        img = cv2.resize(s.image, (nw, nh), interpolation=cv2.INTER_LINEAR)  # as the inference letterbox does
        return img, s.boxes * np.float32(r)

    def _paste(self, canvas: np.ndarray, img: np.ndarray, boxes: np.ndarray, x: int, y: int
               ) -> np.ndarray:
        """Paste ``img`` with its top-left corner at canvas ``(x, y)`` (may be negative); returns moved boxes."""
        H, W = canvas.shape[:2]
        h, w = img.shape[:2]
        x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x2 > x1 and y2 > y1:
            canvas[y1:y2, x1:x2] = img[y1 - y:y2 - y, x1 - x:x2 - x]
        return boxes + np.array([x, y, x, y], np.float32)

    def _single(self, rng: np.random.Generator, s: DetSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, boxes = self._scaled(rng, s)
        canvas = np.full((self.height, self.width, 3), PAD, np.uint8)
        h, w = img.shape[:2]
        # centred when it fits, a random window otherwise
        x = (self.width - w) // 2 if w <= self.width else -int(rng.integers(0, w - self.width + 1))
        y = (self.height - h) // 2 if h <= self.height else -int(rng.integers(0, h - self.height + 1))
        moved = self._paste(canvas, img, boxes, x, y)
        keep_boxes, keep_cls = self._clip(moved, boxes, s.classes)
        return canvas, keep_boxes, keep_cls

    def _mosaic(self, rng: np.random.Generator, parts: Sequence[DetSample]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        canvas = np.full((self.height, self.width, 3), PAD, np.uint8)
        cx = int(rng.uniform(0.3, 0.7) * self.width)
        cy = int(rng.uniform(0.3, 0.7) * self.height)
        all_boxes, all_cls = [], []
        for k, s in enumerate(parts):
            img, boxes = self._scaled(rng, s)
            h, w = img.shape[:2]
            x = cx - w if k in (0, 2) else cx  # quadrants: top-left, top-right, bottom-left, bottom-right
            y = cy - h if k in (0, 1) else cy
            # only this quadrant of the canvas belongs to this image
            quad = canvas[(0 if k < 2 else cy):(cy if k < 2 else self.height),
                          (0 if k in (0, 2) else cx):(cx if k in (0, 2) else self.width)]
            ox, oy = (0 if k in (0, 2) else cx), (0 if k < 2 else cy)
            moved = self._paste(quad, img, boxes, x - ox, y - oy)
            b, c = self._clip(moved, boxes, s.classes, quad.shape[1], quad.shape[0])
            all_boxes.append(b + np.array([ox, oy, ox, oy], np.float32))
            all_cls.append(c)
        return canvas, np.concatenate(all_boxes), np.concatenate(all_cls)

    def _clip(self, moved: np.ndarray, original: np.ndarray, cls: np.ndarray, w: int | None = None,
              h: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Clip boxes to a ``w x h`` area; keep those with enough size and at least 35 % of their area left."""
        w = self.width if w is None else w
        h = self.height if h is None else h
        if len(moved) == 0:
            return moved.reshape(0, 4), cls[:0]
        c = moved.copy()
        c[:, [0, 2]] = c[:, [0, 2]].clip(0, w)
        c[:, [1, 3]] = c[:, [1, 3]].clip(0, h)
        bw, bh = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
        area0 = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
        keep = (bw >= self.min_box) & (bh >= self.min_box) & (bw * bh >= 0.35 * np.maximum(area0, 1e-6))
        return c[keep], cls[keep]

    def _photometric(self, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
        p = self.photometric
        if p <= 0:
            return img
        if rng.random() < 0.1 * p / 0.3:  # colour -> grey (visible cameras in the dark are near-grey)
            g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            img = np.repeat(g[:, :, None], 3, axis=2)
        gain = math.exp(rng.uniform(-p, p))
        bias = rng.uniform(-p, p) * 40.0
        gamma = math.exp(rng.uniform(-p, p))
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma * gain + bias, 0, 255).astype(np.uint8)
        img = cv2.LUT(img, lut)
        if rng.random() < 0.1:
            img = cv2.GaussianBlur(img, (3, 3), 0)
        return img


def collate(images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray]
            ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """``(B, 3, H, W)`` float RGB in [0, 1] and per image ``(boxes (N, 4) xyxy, classes (N,))``."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    targets = [(torch.from_numpy(np.ascontiguousarray(b, np.float32)), torch.from_numpy(c.astype(np.int64)))
               for b, c in zip(boxes, classes, strict=True)]
    return batch.contiguous(), targets
