"""Ground-truth loaders: YOLO txt + classes.txt, Pascal VOC xml, COCO json; error messages name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ivfusion_ros.errors import InputError
from ivfusion_ros.eval.labels import GroundTruth, load_coco, load_voc, load_yolo, load_yolo_classes

# ------------------------------------------------------------------------------------------------- YOLO


def test_yolo_boxes_are_scaled_to_pixels(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("person\ncar\n\n")
    label = tmp_path / "0001.txt"
    label.write_text("0 0.5 0.5 0.25 0.5\n\n1 0.1 0.2 0.2 0.2\n0 0.0 0.5 0.2 0.2\n")
    names = load_yolo_classes(tmp_path / "classes.txt")
    assert names == ("person", "car")
    gt = load_yolo(label, (640, 480), names)
    assert gt.boxes.dtype == np.float32 and gt.class_ids.dtype == np.int64
    expected = [
        [240, 120, 400, 360],  # (0.5 -+ 0.125) * 640, (0.5 -+ 0.25) * 480
        [0, 48, 128, 144],  # (0.1 -+ 0.1) * 640, (0.2 -+ 0.1) * 480
        [0, 192, 64, 288],  # x1 = -64 is clipped to the image
    ]
    np.testing.assert_allclose(gt.boxes, expected, atol=1e-4)
    assert gt.names() == ["person", "car", "person"]
    assert gt.image_size == (640, 480) and not gt.ignore.any() and len(gt) == 3


def test_yolo_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.txt: label file not found"):
        load_yolo(tmp_path / "nope.txt", (10, 10), ("a",))
    gt = load_yolo(tmp_path / "nope.txt", (10, 10), ("a",), missing_ok=True)
    assert len(gt) == 0 and gt.boxes.shape == (0, 4) and gt.image_size == (10, 10)
    (tmp_path / "empty.txt").write_text("\n")
    assert len(load_yolo(tmp_path / "empty.txt", (10, 10), ("a",))) == 0


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0 0.5 0.5 0.1", r"l\.txt:2: expected 5 fields 'cls xc yc w h', got 4"),
        ("0 0.5 0.5 0.1 0.1 0.9", r"l\.txt:2: expected 5 fields 'cls xc yc w h', got 6"),
        ("2 0.5 0.5 0.1 0.1", r"l\.txt:2: class 2 is not in the class table \(2 names\)"),
        ("0.5 0.5 0.5 0.1 0.1", r"l\.txt:2: class '0\.5' is not an integer index"),
        ("0 abc 0.5 0.1 0.1", r"l\.txt:2: non-numeric field"),
        ("0 0.5 0.5 -0.1 0.1", r"l\.txt:2: negative box size w=-0\.1 h=0\.1"),
        ("0 0.5 nan 0.1 0.1", r"l\.txt:2: non-finite coordinate"),
        ("0 320 240 10 10", r"l\.txt:2: coordinates must be normalised to \[0, 1\]"),
    ],
)
def test_yolo_errors_name_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "l.txt"
    path.write_text("1 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(InputError, match=match):
        load_yolo(path, (640, 480), ("a", "b"))


def test_yolo_image_size_and_class_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InputError, match=r"image_size must be \(width, height\) in positive integer pixels, got"):
        load_yolo(path, (640.0, 480), ("a",))  # type: ignore[arg-type]
    classes = tmp_path / "classes.txt"
    classes.write_text("person\n\ncar\n")
    with pytest.raises(InputError, match=r"classes\.txt:2: empty class name \(class 1 needs a name\)"):
        load_yolo_classes(classes)
    classes.write_text("person\ncar\nperson\n")
    with pytest.raises(InputError, match=r"classes\.txt:3: class name 'person' repeats line 1"):
        load_yolo_classes(classes)
    classes.write_text("\n \n")
    with pytest.raises(InputError, match=r"classes\.txt: no class names"):
        load_yolo_classes(classes)


def test_yolo_classes_with_index_prefixes(tmp_path: Path) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("0 person\n1 bicycle\n2: traffic light\n")
    assert load_yolo_classes(classes) == ("person", "bicycle", "traffic light")
    classes.write_text("1 person\n2 car\n")  # not numbered from 0: names taken as written
    assert load_yolo_classes(classes) == ("1 person", "2 car")
    classes.write_text("0 person\ncar\n")  # not every line numbered
    assert load_yolo_classes(classes) == ("0 person", "car")


# -------------------------------------------------------------------------------------------------- VOC

_VOC = """<?xml version="1.0" encoding="utf-8"?>
<annotation>
\t<folder>LLVIP</folder>
\t<filename>010001.jpg</filename>
\t<size>
\t\t<width>1280</width>
\t\t<height>1024</height>
\t\t<depth>3</depth>
\t</size>
\t<object>
\t\t<name>person</name>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>100</xmin>
\t\t\t<ymin>200</ymin>
\t\t\t<xmax>150</xmax>
\t\t\t<ymax>320</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>car</name>
\t\t<difficult>1</difficult>
\t\t<bndbox><xmin>10.5</xmin><ymin>20</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>
\t</object>
\t<object>
\t\t<name>person</name>
\t\t<bndbox><xmin>0</xmin><ymin>0</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>
\t</object>
</annotation>
"""


def test_voc_objects_sizes_and_difficult(tmp_path: Path) -> None:
    path = tmp_path / "010001.xml"
    path.write_text(_VOC)
    gt = load_voc(path)
    assert gt.class_names == ("person", "car")  # order of first appearance
    assert gt.names() == ["person", "car", "person"]
    np.testing.assert_allclose(gt.boxes, [[100, 200, 150, 320], [10.5, 20, 30, 40], [0, 0, 5, 5]])
    assert gt.ignore.tolist() == [False, True, False]
    assert gt.image_size == (1280, 1024)
    fixed = load_voc(path, class_names=("car", "person", "bus"))
    assert fixed.class_names == ("car", "person", "bus") and fixed.class_ids.tolist() == [1, 0, 1]
    shifted = load_voc(path, one_based=True)
    np.testing.assert_allclose(shifted.boxes[0], [99, 199, 150, 320])


def _voc_with(obj: str) -> str:
    size = "<size><width>64</width><height>48</height></size>"
    return f"<annotation>\n{size}\n<object>\n{obj}\n</object>\n</annotation>\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_voc_with("<name>person</name>\n<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>4</ymax></bndbox>"),
         r"a\.xml:5: <xmax> is not a number: 'x'"),
        (_voc_with("<name>person</name>"), r"a\.xml:3: <object> 'person' has no <bndbox>"),
        (_voc_with("<bndbox/>"), r"a\.xml:3: <object> has no <name>"),
        (_voc_with("<name>person</name>\n<bndbox>\n<xmin>1</xmin><ymin>1</ymin><xmax>4</xmax>\n</bndbox>"),
         r"a\.xml:5: <bndbox> has no <ymax>"),
        (_voc_with("<name>person</name>\n<bndbox><xmin>9</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox>"),
         r"a\.xml:5: <bndbox> of 'person' has xmax < xmin or ymax < ymin \(9, 1, 4, 4\)"),
        (_voc_with("<name>truck</name>\n<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox>"),
         r"a\.xml:4: class 'truck' is not in the class table \('person',\)"),
        ("<annotation>\n<object>\n<name>p</name>\n</annotation>\n", r"a\.xml:4: malformed XML \(mismatched tag\)"),
        ("", r"a\.xml:1: malformed XML \(no element found\)"),
        ("<?xml version='1.0'?>\n<doc/>\n", r"a\.xml:2: root element is <doc>, expected <annotation>"),
    ],
)  # fmt: skip
def test_voc_errors_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "a.xml"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        load_voc(path, class_names=("person",))


# ------------------------------------------------------------------------------------------------- COCO


def _coco() -> dict:
    return {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 640, "height": 512},
            {"id": 8, "file_name": "b.jpg", "width": 640, "height": 512},
            {"id": 9, "file_name": "c.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0.5, 1.5, 2, 3], "iscrowd": 1},
            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [1, 1, 1, 1]},
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
    }


def test_coco_per_image_records(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_coco(), indent=1))
    gts = load_coco(path)
    assert list(gts) == ["a.jpg", "b.jpg", "c.jpg"]
    a = gts["a.jpg"]
    assert a.class_names == ("person", "car")  # ascending category id
    assert a.names() == ["car", "person"]
    np.testing.assert_allclose(a.boxes, [[10, 20, 40, 60], [0.5, 1.5, 2.5, 4.5]])
    assert a.ignore.tolist() == [False, True] and a.image_size == (640, 512)
    assert len(gts["b.jpg"]) == 0 and gts["b.jpg"].class_names == ("person", "car")
    assert gts["c.jpg"].image_size is None


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["annotations"][1].update(bbox=[0, 0, -1, 2]),
         r"gt\.json: annotations\[1\] \(id 2\): bbox must be 4 finite numbers \[x, y, w, h\] with w, h >= 0"),
        (lambda d: d["annotations"][2].update(image_id=99), r"annotations\[2\] \(id 3\): image_id 99 is not in images"),
        (lambda d: d["annotations"][0].update(category_id=2),
         r"annotations\[0\] \(id 1\): category_id 2 is not in categories"),
        (lambda d: d["images"].append({"id": 7, "file_name": "z.jpg"}), r"images\[3\]: image id 7 repeats"),
        (lambda d: d["images"].append({"id": 10, "file_name": "a.jpg"}), r"images\[3\]: file_name 'a\.jpg' repeats"),
        (lambda d: d["categories"].append({"id": 5, "name": "car"}), r"categories\[2\]: category name 'car' repeats"),
        (lambda d: d.pop("categories"), r"gt\.json: 'categories' must be a list, missing"),
    ],
)  # fmt: skip
def test_coco_structure_errors_name_the_element(tmp_path: Path, edit, match: str) -> None:
    doc = _coco()
    edit(doc)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=match):
        load_coco(path)


def test_coco_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text('{\n  "images": [],\n  "categories": [,]\n}\n')
    with pytest.raises(InputError, match=r"gt\.json:3:18: invalid JSON \(Expecting value\)"):
        load_coco(path)


# ------------------------------------------------------------------------------------------ the record


def test_ground_truth_record_validation() -> None:
    gt = GroundTruth(np.array([[0, 0, 2, 2]]), np.array([0]), ("person",))
    assert gt.ignore.tolist() == [False] and gt.boxes.dtype == np.float32
    assert len(GroundTruth.empty(("a",))) == 0
    with pytest.raises(InputError, match=r"boxes must have shape \(N, 4\), got \(1, 3\)"):
        GroundTruth(np.zeros((1, 3)), np.array([0]), ("a",))
    with pytest.raises(InputError, match=r"class id 1 is outside the class table of 1 name\(s\)"):
        GroundTruth(np.zeros((1, 4)), np.array([1]), ("a",))
    with pytest.raises(InputError, match=r"boxes need x2 >= x1 and y2 >= y1"):
        GroundTruth(np.array([[5, 0, 2, 2]]), np.array([0]), ("a",))
    with pytest.raises(InputError, match=r"class_ids must be 1 integers"):
        GroundTruth(np.zeros((1, 4)), np.array([0.0]), ("a",))
