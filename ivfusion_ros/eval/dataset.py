"""Evaluation data sets on disk: thermal/visible image pairs plus optional ground truth.

A data set is a folder holding the two image folders and, optionally, labels::

    DATASET/
      ir/ vi/                        thermal and visible images, paired by file stem (same size or not)
      labels/*.txt                   YOLO labels (``cls xc yc w h``, normalised), one file per pair, or
      labels/{fusion,infrared,...}/  several YOLO annotations of the same images: ``fusion`` is used unless
                                     ``labels=`` names another one
      labels/classes.txt             YOLO class names (or ``classes.txt`` in the label folder or in DATASET/)
      Annotations/*.xml              Pascal VOC (LLVIP, M3FD), one file per pair
      annotations/*.json             one COCO detection json (matched to pairs by the stem of ``file_name``)

The image folders are found by name, case-insensitively: thermal ``ir``, ``infrared``, ``thermal``, ``lwir``;
visible ``vi``, ``vis``, ``visible``, ``rgb`` (first match in that order). Explicit ``ir=`` / ``vis=`` folders
replace the search (a data set may then have no root folder at all).

Ground truth is in pixels of the *visible* image (the pipeline's output grid is the visible camera's). YOLO
boxes are kept normalised and scaled to the output size of each frame; VOC and COCO pixel boxes are scaled by
output size / visible size (a no-op unless ``registration.output_width/height`` resizes the output), after a
check that the size the label file states matches the visible image.

Pairing and matching rules, decided here:

* the label file of every pair is parsed when the data set is opened, so a malformed file stops the evaluation
  before it starts (the :class:`InputError` names ``file:line``);
* a pair without a label file has no objects (YOLO's convention; counted in :attr:`Dataset.missing_labels`),
  but label files that match *none* of the pairs are an error (wrong folder or naming);
* label files without an image pair are ignored (LLVIP ships the annotations of train and test in one
  folder) and counted in :attr:`Dataset.unused_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval.labels import GroundTruth, load_coco, load_voc, load_yolo, load_yolo_classes
from ivfusion_ros.io.images import IMAGE_SUFFIXES, ImagePair

__all__ = [
    "IR_DIR_NAMES",
    "LABEL_FORMATS",
    "VIS_DIR_NAMES",
    "Dataset",
    "LabelSet",
    "find_image_dir",
    "find_yolo_classes",
    "image_files",
    "open_dataset",
    "open_datasets",
]

#: Folder names searched (case-insensitively, in this order) for the thermal images of a data set.
IR_DIR_NAMES = ("ir", "infrared", "thermal", "lwir")
#: Folder names searched for the visible images.
VIS_DIR_NAMES = ("vi", "vis", "visible", "rgb")
#: Label formats :func:`open_dataset` reads.
LABEL_FORMATS = ("yolo", "voc", "coco")

_DEFAULT_YOLO_SUBDIR = "fusion"


@dataclass
class LabelSet:
    """The ground truth of one data set, parsed.

    Attributes:
        format: ``"yolo"``, ``"voc"`` or ``"coco"``.
        path: the label folder (YOLO, VOC) or json file (COCO).
        class_names: the class table (YOLO ``classes.txt``; VOC ``classes=`` or the names of the files in order
            of first appearance; COCO categories in id order).
        classes_file: the ``classes.txt`` used, if any.
        records: ground truth per pair name. YOLO boxes are normalised to [0, 1] (image size ``(1, 1)``),
            VOC/COCO boxes are in visible-image pixels.
    """

    format: str
    path: Path
    class_names: tuple[str, ...]
    classes_file: Path | None = None
    records: dict[str, GroundTruth] = field(default_factory=dict)

    def describe(self) -> dict:
        """JSON-ready description (for the report)."""
        return {"format": self.format, "path": str(self.path), "classes": list(self.class_names),
                "classes_file": str(self.classes_file) if self.classes_file else None}


@dataclass
class Dataset:
    """Image pairs of one data set and, when it has labels, their ground truth.

    Attributes:
        name: short name for tables (the folder name; made unique by :func:`open_datasets`).
        root: the data set folder, or ``None`` when only ``ir=``/``vis=`` folders were given.
        ir_dir, vis_dir: the image folders.
        pairs: the pairs, sorted by name (cut to ``limit``).
        labels: the ground truth, or ``None``.
        missing_labels: names of pairs without a label file (evaluated as images without objects).
        unused_labels: label files whose name matches no pair.
        unpaired: ``(thermal images without a visible partner, visible images without a thermal partner)``.
    """

    name: str
    root: Path | None
    ir_dir: Path
    vis_dir: Path
    pairs: list[ImagePair]
    labels: LabelSet | None = None
    missing_labels: list[str] = field(default_factory=list)
    unused_labels: int = 0
    unpaired: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.pairs)

    def ground_truth(self, name: str, vis_size: tuple[int, int], out_size: tuple[int, int]) -> GroundTruth | None:
        """The ground truth of pair ``name`` in pixels of the pipeline output, or ``None`` without labels.

        Args:
            name: the pair name.
            vis_size: ``(width, height)`` of the visible image as read from disk.
            out_size: ``(width, height)`` of the fused output (``Result.fused``).

        Raises:
            InputError: the label file states an image size other than the visible image's.
        """
        if self.labels is None:
            return None
        gt = self.labels.records.get(name)
        if gt is None:
            return GroundTruth.empty(self.labels.class_names, out_size, f"{self.labels.path} (no label for {name})")
        if self.labels.format == "yolo":
            scale = np.array([out_size[0], out_size[1], out_size[0], out_size[1]], np.float64)
        else:
            if gt.image_size is not None and tuple(gt.image_size) != tuple(vis_size):
                raise InputError(
                    f"{gt.source}: label/image mismatch: the label is for a {gt.image_size[0]}x{gt.image_size[1]} "
                    f"image, but {self.pairs_by_name()[name].vis} is {vis_size[0]}x{vis_size[1]}",
                    reason="label_mismatch",
                )
            sx, sy = out_size[0] / vis_size[0], out_size[1] / vis_size[1]
            scale = np.array([sx, sy, sx, sy], np.float64)
        return GroundTruth(gt.boxes.astype(np.float64) * scale, gt.class_ids, gt.class_names, gt.ignore,
                           tuple(out_size), gt.source)  # fmt: skip

    def pairs_by_name(self) -> dict[str, ImagePair]:
        return {p.name: p for p in self.pairs}

    def describe(self) -> dict:
        """JSON-ready description (for the report)."""
        return {
            "name": self.name,
            "root": str(self.root) if self.root else None,
            "ir": str(self.ir_dir),
            "vis": str(self.vis_dir),
            "pairs": len(self.pairs),
            "unpaired": {"ir": self.unpaired[0], "vis": self.unpaired[1]},
            "labels": self.labels.describe() if self.labels else None,
            "missing_labels": len(self.missing_labels),
            "unused_labels": self.unused_labels,
        }


# ------------------------------------------------------------------------------------------------ helpers


def image_files(folder: Path) -> dict[str, Path]:
    """The images of ``folder`` by file stem (two files with one stem are an error: which one pairs?)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in out:
                raise InputError(f"{folder}: two images share the name {p.stem!r} ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
    return out


def find_image_dir(root: Path, names: Sequence[str], what: str) -> Path:
    """The first sub-folder of ``root`` named one of ``names`` (case-insensitive), e.g. :data:`IR_DIR_NAMES`."""
    subdirs = {p.name.casefold(): p for p in sorted(root.iterdir()) if p.is_dir()}
    for n in names:
        if n in subdirs:
            return subdirs[n]
    found = ", ".join(sorted(p.name + "/" for p in subdirs.values())) or "no folders"
    raise InputError(
        f"{root}: no {what} image folder (looked for {', '.join(n + '/' for n in names)}; found {found})",
        reason="missing",
    )


def _dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what}: no such folder: {path}", reason="missing")
    if not path.is_dir():
        raise InputError(f"{what}: not a folder: {path}", reason="bad_input")
    return path


def _pair(ir_dir: Path, vis_dir: Path) -> tuple[list[ImagePair], tuple[int, int]]:
    a, b = image_files(ir_dir), image_files(vis_dir)
    names = sorted(a.keys() & b.keys())
    if not names:
        raise InputError(
            f"no image pairs: no file names in common between {ir_dir} ({len(a)} images) and {vis_dir} "
            f"({len(b)} images)",
            reason="missing",
        )
    return [ImagePair(n, a[n], b[n]) for n in names], (len(a) - len(names), len(b) - len(names))


def _resolve(path: Path, root: Path | None) -> Path:
    """``path`` as given when it exists (or is absolute), else relative to the data set folder."""
    if path.exists() or path.is_absolute() or root is None:
        return path
    return root / path


def _label_files(folder: Path, suffix: str) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(folder.glob(f"*{suffix}")) if p.is_file()}
    files.pop("classes", None)
    return files


def _pick_yolo_dir(folder: Path) -> Path:
    """``folder`` itself when it holds ``*.txt`` labels, else its ``fusion/`` (or only) annotation subfolder."""
    if _label_files(folder, ".txt"):
        return folder
    subdirs = [p for p in sorted(folder.iterdir()) if p.is_dir() and _label_files(p, ".txt")]
    for p in subdirs:
        if p.name.casefold() == _DEFAULT_YOLO_SUBDIR:
            return p
    if len(subdirs) == 1:
        return subdirs[0]
    if subdirs:
        names = ", ".join(p.name for p in subdirs)
        raise InputError(f"{folder}: several annotation folders ({names}) and none is named "
                         f"'{_DEFAULT_YOLO_SUBDIR}'; choose one with --labels {folder}/<name>")  # fmt: skip
    raise InputError(f"{folder}: no label files (*.txt) in it or in a subfolder", reason="missing")


def _detect_labels(path: Path) -> tuple[str, Path]:
    """Format and location of the labels at ``path`` (a json file, or a folder of xml or txt files)."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco", path
        raise InputError(f"{path}: not a label folder or a COCO .json file", reason="bad_input")
    if _label_files(path, ".xml"):
        return "voc", path
    jsons = sorted(path.glob("*.json"))
    if not _label_files(path, ".txt") and len(jsons) == 1:
        return "coco", jsons[0]
    return "yolo", _pick_yolo_dir(path)


def _find_labels(root: Path) -> tuple[str, Path] | None:
    """Labels in the standard places of a data set folder, or ``None``."""
    children = {p.name.casefold(): p for p in sorted(root.iterdir()) if p.is_dir()}
    if "labels" in children:
        return _detect_labels(children["labels"])
    if "annotations" in children:
        return _detect_labels(children["annotations"])
    return None


def find_yolo_classes(label_dir: Path, root: Path | None, classes: Path | None, hint: str = "pass --classes FILE"
                      ) -> Path:
    """``classes`` if given, else the first ``classes.txt`` in the label folder, its parent or ``root``."""
    if classes is not None:
        return classes
    candidates = [label_dir / "classes.txt", label_dir.parent / "classes.txt"]
    if root is not None:
        candidates.append(root / "classes.txt")
    for c in dict.fromkeys(candidates):
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise InputError(f"YOLO labels in {label_dir} need class names: no classes.txt found ({tried}); {hint}",
                     reason="missing")


def _load_labels(fmt: str, path: Path, root: Path | None, classes: Path | None,
                 names: set[str]) -> tuple[LabelSet, int]:  # fmt: skip
    """Parse the label files of the pairs in ``names``; return them and the number of label entries."""
    if fmt == "coco":
        if classes is not None:
            raise ConfigError(f"--classes applies to YOLO and VOC labels; {path} is COCO json with its own categories")
        by_file = load_coco(path)
        records: dict[str, GroundTruth] = {}
        for file_name, gt in by_file.items():
            stem = Path(file_name).stem
            if stem in records:
                raise InputError(f"{path}: two images have the file stem {stem!r}; cannot match them to pairs")
            records[stem] = gt
        if not by_file:
            raise InputError(f"{path}: the COCO file lists no images")
        class_names = next(iter(by_file.values())).class_names
        return LabelSet("coco", path, class_names, None, records), len(records)
    if fmt == "voc":
        table = load_yolo_classes(classes) if classes is not None else None
        files = _label_files(path, ".xml")
        records = {stem: load_voc(f, table) for stem, f in files.items() if stem in names}
        if table is None:
            seen: dict[str, None] = {}
            for gt in records.values():
                seen.update(dict.fromkeys(gt.class_names))
            table = tuple(seen)
        return LabelSet("voc", path, table, classes, records), len(files)
    classes_file = find_yolo_classes(path, root, classes)
    table = load_yolo_classes(classes_file)
    files = _label_files(path, ".txt")
    records = {stem: load_yolo(f, (1, 1), table) for stem, f in files.items() if stem in names}
    return LabelSet("yolo", path, table, classes_file, records), len(files)


def open_dataset(
    path: str | Path | None = None,
    *,
    ir: str | Path | None = None,
    vis: str | Path | None = None,
    labels: str | Path | None = None,
    classes: str | Path | None = None,
    limit: int | None = None,
    name: str | None = None,
) -> Dataset:
    """Find the pairs and labels of one data set and parse its label files.

    Args:
        path: the data set folder (see the module docstring for its layout); may be ``None`` when ``ir`` and
            ``vis`` are given.
        ir, vis: image folders to use instead of searching ``path`` (relative ones are tried as given, then
            inside ``path``).
        labels: a label folder (YOLO txt, VOC xml, or a folder with YOLO annotation subfolders) or a COCO json
            file, instead of the standard places; relative paths as for ``ir``.
        classes: a ``classes.txt`` (one name per line) for YOLO or VOC labels.
        limit: keep only the first ``limit`` pairs (sorted by name).
        name: the data set's name in reports (default: the folder name).

    Raises:
        InputError: a folder or file is missing, there are no pairs, label files match no pair, or a label
            file is malformed (the message names the file and line).
        ConfigError: ``ir`` without ``vis`` or the other way round, ``classes`` with COCO labels, ``limit < 1``.
    """
    root = Path(path) if path is not None else None
    if root is not None:
        _dir(root, "data set")
    if (ir is None) != (vis is None):
        raise ConfigError("--ir and --vis go together: give both folders or neither")
    if ir is not None and vis is not None:
        ir_dir = _dir(_resolve(Path(ir), root), "--ir")
        vis_dir = _dir(_resolve(Path(vis), root), "--vis")
    elif root is not None:
        ir_dir = find_image_dir(root, IR_DIR_NAMES, "thermal")
        vis_dir = find_image_dir(root, VIS_DIR_NAMES, "visible")
    else:
        raise ConfigError("no data set: give a data set folder, or --ir and --vis folders")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    pairs, unpaired = _pair(ir_dir, vis_dir)
    pairs = pairs[:limit] if limit else pairs

    classes_path = Path(classes) if classes is not None else None
    if classes_path is not None and not classes_path.is_file():
        raise InputError(f"--classes: no such file: {classes_path}", reason="missing")
    found: tuple[str, Path] | None
    if labels is not None:
        label_path = _resolve(Path(labels), root)
        if not label_path.exists():
            also = root is not None and not Path(labels).is_absolute()
            tried = f"{labels}" + (f" or {label_path}" if also else "")
            raise InputError(f"--labels: no such file or folder: {tried}", reason="missing")
        found = _detect_labels(label_path)
    else:
        found = _find_labels(root) if root is not None else None

    ds = Dataset(name or (root.name if root is not None else ir_dir.parent.name or "pairs"), root, ir_dir, vis_dir,
                 pairs, unpaired=unpaired)  # fmt: skip
    if found is None:
        if classes_path is not None:
            raise ConfigError(f"--classes given, but {root or ir_dir.parent} has no labels (pass --labels)")
        return ds
    fmt, where = found
    names = {p.name for p in pairs}
    label_set, n_files = _load_labels(fmt, where, root, classes_path, names)
    matched = names & label_set.records.keys()
    if not matched:
        example_label = next(iter(_label_files(where, ".xml" if fmt == "voc" else ".txt")), None) \
            if fmt != "coco" else None  # fmt: skip
        hint = f" (e.g. label {example_label!r}, image {pairs[0].name!r})" if example_label else ""
        raise InputError(
            f"label/image mismatch: none of the {len(pairs)} pair(s) in {vis_dir} has a label in {where}{hint}",
            reason="label_mismatch",
        )
    ds.labels = label_set
    ds.missing_labels = sorted(names - matched)
    ds.unused_labels = n_files - len(matched)
    label_set.records = {k: v for k, v in label_set.records.items() if k in names}
    return ds


def open_datasets(
    paths: str | Sequence[str | Path] | None,
    *,
    ir: str | Path | None = None,
    vis: str | Path | None = None,
    labels: str | Path | None = None,
    classes: str | Path | None = None,
    limit: int | None = None,
) -> list[Dataset]:
    """Open one or several data sets (``"a,b"`` or a list); names are made unique (``name``, ``name-2``, ...).

    ``labels`` and ``classes`` apply to every data set (a relative ``labels`` is looked up in each one);
    ``ir``/``vis`` need a single data set (or none).

    Raises:
        ConfigError: ``ir``/``vis`` with several data sets, or no data set at all.
        InputError: as :func:`open_dataset`.
    """
    if isinstance(paths, str):
        items: list[str | Path | None] = [p.strip() for p in paths.split(",") if p.strip()]
    else:
        items = list(paths or [])
    if not items:
        if ir is None and vis is None:
            raise ConfigError("no data set given: pass DATASET (comma-separated for several) or --ir and --vis")
        items = [None]
    if len(items) > 1 and (ir is not None or vis is not None):
        raise ConfigError("--ir/--vis select the folders of one data set; they cannot be used with several")
    out: list[Dataset] = []
    used: set[str] = set()
    for item in items:
        ds = open_dataset(item, ir=ir, vis=vis, labels=labels, classes=classes, limit=limit)
        base, k = ds.name, 2
        while ds.name in used:
            ds.name, k = f"{base}-{k}", k + 1
        used.add(ds.name)
        out.append(ds)
    return out
