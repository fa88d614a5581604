"""Ground-truth boxes from YOLO txt, Pascal VOC xml (LLVIP, M3FD) and COCO json, in one record type.

:class:`GroundTruth` mirrors :class:`ivfusion_ros.detect.base.Detections`: boxes ``(N, 4)`` float32
``x1, y1, x2, y2`` in pixels of the image, ``class_ids`` int64 indexing ``class_names``. The evaluator matches
detections and ground truth by class *name*, so every file may carry its own class table.

Pixel convention: continuous coordinates, the image spans ``[0, W] x [0, H]`` (what detectors output and what
COCO uses). YOLO's normalised centres and sizes are scaled by the image size; COCO ``[x, y, w, h]`` becomes
``[x, y, x + w, y + h]``; VOC corners are taken as they are written (labelImg, which made the LLVIP and M3FD
files, writes 0-based pixel positions) unless ``one_based=True`` shifts ``xmin, ymin`` by -1 for files that
follow the original 1-based inclusive VOC devkit convention.

A malformed file raises :class:`InputError` whose message starts with ``path:line:`` (YOLO, VOC, JSON syntax)
or names the JSON element (COCO structure: ``annotations[3] (id 17)``), then says what is wrong.
"""

from __future__ import annotations

import json
import math
import re
import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivfusion_ros.errors import InputError

__all__ = ["GroundTruth", "load_coco", "load_voc", "load_yolo", "load_yolo_classes"]


@dataclass
class GroundTruth:
    """The ground truth of one image.

    Attributes:
        boxes: ``(N, 4)`` float32, ``x1, y1, x2, y2`` in pixels, ``x2 >= x1`` and ``y2 >= y1``.
        class_ids: ``(N,)`` int64 indices into ``class_names``.
        class_names: the class table of this record (a file's own table, or the one the caller passed).
        ignore: ``(N,)`` bool; ``True`` for VOC ``difficult`` and COCO ``iscrowd`` objects. The evaluator hands
            them to COCO as crowd regions: missing them costs nothing and detections on them are not false
            positives.
        image_size: ``(width, height)`` in pixels when the file states it (VOC, COCO) or it was given (YOLO).
        source: the file the record came from, for messages.
    """

    boxes: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...] = ()
    ignore: np.ndarray | None = None
    image_size: tuple[int, int] | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = f" ({self.source})" if self.source else ""
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError(f"ground truth{where}: boxes must have shape (N, 4), got {boxes.shape}")
        n = boxes.shape[0]
        ids = np.asarray(self.class_ids)
        if ids.shape != (n,) or (n and not np.issubdtype(ids.dtype, np.integer)):
            raise InputError(f"ground truth{where}: class_ids must be {n} integers, got shape {ids.shape} {ids.dtype}")
        ids = ids.astype(np.int64)
        names = tuple(str(c) for c in self.class_names)
        bad = ids[(ids < 0) | (ids >= len(names))]
        if bad.size:
            raise InputError(
                f"ground truth{where}: class id {int(bad[0])} is outside the class table of {len(names)} name(s)"
            )
        if not np.isfinite(boxes).all():
            raise InputError(f"ground truth{where}: boxes have non-finite coordinates")
        if n and ((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
            raise InputError(f"ground truth{where}: boxes need x2 >= x1 and y2 >= y1")
        ignore = np.zeros(n, bool) if self.ignore is None else np.asarray(self.ignore, dtype=bool)
        if ignore.shape != (n,):
            raise InputError(f"ground truth{where}: ignore must have shape ({n},), got {ignore.shape}")
        self.boxes, self.class_ids, self.class_names, self.ignore = boxes, ids, names, ignore

    @classmethod
    def empty(
        cls, class_names: Sequence[str] = (), image_size: tuple[int, int] | None = None, source: str = ""
    ) -> GroundTruth:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), tuple(class_names), None, image_size, source)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def names(self) -> list[str]:
        """Class name of each object."""
        return [self.class_names[i] for i in self.class_ids.tolist()]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: label file not found", reason="missing_file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _check_size(image_size: object, path: Path) -> tuple[int, int]:
    ok = (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in image_size)
    )
    if not ok:
        raise InputError(f"{path}: image_size must be (width, height) in positive integer pixels, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])  # type: ignore[index]


# ------------------------------------------------------------------------------------------------- YOLO

_NUMBERED = re.compile(r"(\d+)\s*[:\s]\s*(\S.*)")  # "0 person", "1: bicycle"


def load_yolo_classes(path: str | Path) -> tuple[str, ...]:
    """Read a YOLO ``classes.txt``: one class name per line, line ``k`` (0-based) naming class ``k``.

    Surrounding whitespace is stripped and trailing empty lines are ignored; an empty line between names,
    a repeated name or a file without names raises :class:`InputError` naming the file and line. Files whose
    every line starts with its own index (``0 person``, ``1: bicycle``, ... in order from 0, as some data sets
    ship them, MSRS's detection labels among them) give the names without the index.
    """
    path = Path(path)
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"{path}: no class names (expected one name per line)")
    names: list[str] = []
    for no, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise InputError(f"{path}:{no}: empty class name (class {no - 1} needs a name)")
        if name in names:
            raise InputError(f"{path}:{no}: class name {name!r} repeats line {names.index(name) + 1}")
        names.append(name)
    numbered = [_NUMBERED.fullmatch(n) for n in names]
    if all(m is not None and int(m.group(1)) == k for k, m in enumerate(numbered)):
        return tuple(m.group(2) for m in numbered)  # type: ignore[union-attr]
    return tuple(names)


def load_yolo(
    path: str | Path, image_size: tuple[int, int], class_names: Sequence[str], *, missing_ok: bool = False
) -> GroundTruth:
    """Read one YOLO label file: a line ``cls xc yc w h`` per object, coordinates normalised to [0, 1].

    ``x1 = (xc - w/2) W``, ``y1 = (yc - h/2) H``, ``x2 = (xc + w/2) W``, ``y2 = (yc + h/2) H`` for
    ``image_size = (W, H)``, then clipped to the image (a box reaching 1e-6 past the border is rounding, not an
    error). ``class_names`` is the table of ``classes.txt`` (see :func:`load_yolo_classes`). Blank lines are
    skipped. In the YOLO layout an image without a label file has no objects: ``missing_ok=True`` returns an
    empty record for a missing file instead of raising.

    Raises :class:`InputError` naming ``path:line`` for a line without exactly 5 fields (segment polygons and
    prediction files with a score column are not ground-truth boxes), a non-integer or unknown class, a
    non-finite or out-of-range coordinate, or a negative size.
    """
    path = Path(path)
    width, height = _check_size(image_size, path)
    names = tuple(class_names)
    if missing_ok and not path.exists():
        return GroundTruth.empty(names, (width, height), str(path))
    rows: list[list[float]] = []
    ids: list[int] = []
    for no, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise InputError(f"{path}:{no}: expected 5 fields 'cls xc yc w h', got {len(fields)}: {line.strip()!r}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise InputError(f"{path}:{no}: non-numeric field in {line.strip()!r}") from None
        cls_f = values[0]
        if not cls_f.is_integer():
            raise InputError(f"{path}:{no}: class {fields[0]!r} is not an integer index")
        cls = int(cls_f)
        if not 0 <= cls < len(names):
            raise InputError(f"{path}:{no}: class {cls} is not in the class table ({len(names)} names)")
        xc, yc, w, h = values[1:]
        if not all(math.isfinite(v) for v in (xc, yc, w, h)):
            raise InputError(f"{path}:{no}: non-finite coordinate in {line.strip()!r}")
        if w < 0 or h < 0:
            raise InputError(f"{path}:{no}: negative box size w={w:g} h={h:g}")
        tol = 1e-6
        if not all(-tol <= v <= 1 + tol for v in (xc, yc, w, h)):
            raise InputError(f"{path}:{no}: coordinates must be normalised to [0, 1], got {line.strip()!r}")
        ids.append(cls)
        rows.append([(xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height])
    boxes = np.array(rows, np.float64).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return GroundTruth(boxes, np.array(ids, np.int64), names, None, (width, height), str(path))


# -------------------------------------------------------------------------------------------------- VOC


@dataclass
class _Node:
    tag: str
    line: int
    children: list[_Node] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)


def _parse_xml(path: Path) -> _Node:
    """Parse with expat, keeping each element's line number (ElementTree drops them).

    Bytes go to expat as they are, so it honours the file's own ``encoding=`` declaration.
    """
    data = _read_bytes(path)
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Node] = []
    roots: list[_Node] = []

    def start(tag: str, _attrs: dict) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(text: str) -> None:
        if stack:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise InputError(f"{path}:{e.lineno}: malformed XML ({xml.parsers.expat.ErrorString(e.code)})") from None
    return roots[0]


def _child_text(node: _Node, tag: str, path: Path) -> tuple[str, int]:
    child = node.find(tag)
    if child is None:
        raise InputError(f"{path}:{node.line}: <{node.tag}> has no <{tag}>")
    return child.text.strip(), child.line


def _child_number(node: _Node, tag: str, path: Path) -> float:
    text, line = _child_text(node, tag, path)
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}:{line}: <{tag}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{path}:{line}: <{tag}> is not finite: {text!r}")
    return value


def load_voc(path: str | Path, class_names: Sequence[str] | None = None, *, one_based: bool = False) -> GroundTruth:
    """Read one Pascal VOC annotation (``<annotation>`` with ``<size>`` and ``<object>`` elements).

    Each ``<object>`` needs ``<name>`` and ``<bndbox>`` with ``xmin ymin xmax ymax``; ``<difficult>1`` marks it
    ``ignore``. The class table is ``class_names`` when given (a name outside it is an error) and otherwise the
    file's names in order of first appearance. ``image_size`` comes from ``<size>`` when present. Boxes are
    ``[xmin, ymin, xmax, ymax]`` as written, or ``[xmin - 1, ymin - 1, xmax, ymax]`` with ``one_based=True``
    (1-based inclusive pixel indices, the VOC devkit convention).

    Raises :class:`InputError` naming ``path:line`` for malformed XML, a root other than ``<annotation>``, a
    missing or non-numeric field, an unknown class, or ``xmax < xmin`` / ``ymax < ymin``.
    """
    path = Path(path)
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise InputError(f"{path}:{root.line}: root element is <{root.tag}>, expected <annotation>")
    image_size = None
    size = root.find("size")
    if size is not None:
        w, h = _child_number(size, "width", path), _child_number(size, "height", path)
        if w > 0 and h > 0:  # labelImg writes 0 when it could not read the image: treat as unknown
            image_size = (int(w), int(h))
    names: list[str] = list(class_names) if class_names is not None else []
    rows: list[list[float]] = []
    ids: list[int] = []
    ignore: list[bool] = []
    shift = 1.0 if one_based else 0.0
    for obj in (c for c in root.children if c.tag == "object"):
        name, name_line = _child_text(obj, "name", path)
        if not name:
            raise InputError(f"{path}:{name_line}: empty <name>")
        if name not in names:
            if class_names is not None:
                raise InputError(f"{path}:{name_line}: class {name!r} is not in the class table {tuple(names)}")
            names.append(name)
        box = obj.find("bndbox")
        if box is None:
            raise InputError(f"{path}:{obj.line}: <object> {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_child_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise InputError(
                f"{path}:{box.line}: <bndbox> of {name!r} has xmax < xmin or ymax < ymin "
                f"({x1:g}, {y1:g}, {x2:g}, {y2:g})"
            )
        difficult = obj.find("difficult")
        ignore.append(difficult is not None and difficult.text.strip() not in ("", "0"))
        ids.append(names.index(name))
        rows.append([x1 - shift, y1 - shift, x2, y2])
    return GroundTruth(
        np.array(rows, np.float64).reshape(-1, 4), np.array(ids, np.int64), tuple(names), np.array(ignore, bool),
        image_size, str(path),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------- COCO


def _load_json(path: Path) -> object:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None


def _json_list(doc: dict, key: str, path: Path, required: bool = True) -> list:
    value = doc.get(key, None if required else [])
    if not isinstance(value, list):
        raise InputError(f"{path}: '{key}' must be a list" + (", missing" if value is None else ""))
    return value


def load_coco(path: str | Path) -> dict[str, GroundTruth]:
    """Read a COCO detection json into one :class:`GroundTruth` per image, keyed by ``file_name``.

    Every record's class table lists all categories in ascending category id, so ``class_ids`` are positions
    in that list (not COCO category ids). ``bbox = [x, y, w, h]`` becomes ``[x, y, x + w, y + h]``;
    ``iscrowd = 1`` marks ``ignore``; ``image_size`` is ``(width, height)`` when the image entry has both.
    Images without annotations get an empty record.

    Raises :class:`InputError`: ``path:line:col`` for invalid JSON; for a structural problem the message names
    the element, e.g. ``annotations[3] (id 17): bbox must be 4 finite numbers [x, y, w, h] with w, h >= 0``,
    an unknown ``image_id`` or ``category_id``, a repeated id or file name.
    """
    path = Path(path)
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise InputError(f"{path}: top level must be a JSON object with 'images', 'annotations', 'categories'")
    images = _json_list(doc, "images", path)
    annotations = _json_list(doc, "annotations", path, required=False)
    categories = _json_list(doc, "categories", path)

    cat_pos: dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise InputError(f"{path}: categories[{i}] needs an integer 'id' and a string 'name'")
        if cat["id"] in cat_pos:
            raise InputError(f"{path}: categories[{i}]: category id {cat['id']} repeats")
        if cat["name"] in cat_pos.values():
            raise InputError(f"{path}: categories[{i}]: category name {cat['name']!r} repeats")
        cat_pos[cat["id"]] = cat["name"]
    order = sorted(cat_pos)
    names = tuple(cat_pos[c] for c in order)
    index_of = {c: k for k, c in enumerate(order)}

    by_id: dict[int, tuple[str, tuple[int, int] | None]] = {}
    seen_files: set[str] = set()
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
            raise InputError(f"{path}: images[{i}] needs an integer 'id' and a string 'file_name'")
        if img["id"] in by_id:
            raise InputError(f"{path}: images[{i}]: image id {img['id']} repeats")
        if img["file_name"] in seen_files:
            raise InputError(f"{path}: images[{i}]: file_name {img['file_name']!r} repeats")
        seen_files.add(img["file_name"])
        w, h = img.get("width"), img.get("height")
        size = (w, h) if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 else None
        by_id[img["id"]] = (img["file_name"], size)

    per_image: dict[int, tuple[list[list[float]], list[int], list[bool]]] = {k: ([], [], []) for k in by_id}
    for i, ann in enumerate(annotations):
        label = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            raise InputError(f"{path}: {label} must be an object")
        if ann.get("image_id") not in by_id:
            raise InputError(f"{path}: {label}: image_id {ann.get('image_id')!r} is not in images")
        if ann.get("category_id") not in index_of:
            raise InputError(f"{path}: {label}: category_id {ann.get('category_id')!r} is not in categories")
        bbox = ann.get("bbox")
        valid = (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
            and bbox[2] >= 0
            and bbox[3] >= 0
        )
        if not valid:
            raise InputError(
                f"{path}: {label}: bbox must be 4 finite numbers [x, y, w, h] with w, h >= 0, got {bbox!r}"
            )
        x, y, w, h = (float(v) for v in bbox)
        rows, ids, ignore = per_image[ann["image_id"]]
        rows.append([x, y, x + w, y + h])
        ids.append(index_of[ann["category_id"]])
        ignore.append(bool(ann.get("iscrowd", 0)))

    out: dict[str, GroundTruth] = {}
    for image_id, (file_name, size) in by_id.items():
        rows, ids, ignore = per_image[image_id]
        out[file_name] = GroundTruth(
            np.array(rows, np.float64).reshape(-1, 4), np.array(ids, np.int64), names, np.array(ignore, bool),
            size, f"{path}#{file_name}",
        )  # fmt: skip
    return out
