"""Data set discovery: image folders, label formats and places, class tables, mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from eval_data import BLOB_SIZE, BLOBS, write_blob_dataset

from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval.dataset import open_dataset, open_datasets


def _pairs(root: Path, names: list[str], ir: str = "ir", vis: str = "vi", size: tuple[int, int] = (32, 24)) -> None:
    (root / ir).mkdir(parents=True, exist_ok=True)
    (root / vis).mkdir(parents=True, exist_ok=True)
    for n in names:
        cv2.imwrite(str(root / ir / f"{n}.png"), np.zeros(size[::-1], np.uint8))
        cv2.imwrite(str(root / vis / f"{n}.jpg"), np.zeros((*size[::-1], 3), np.uint8))


def _voc(path: Path, size: tuple[int, int] | None, objects: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    sz = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation>{sz}{objs}</annotation>")


def test_yolo_labels_are_found_parsed_and_scaled(tmp_path: Path) -> None:
    write_blob_dataset(tmp_path, n=2)
    ds = open_dataset(tmp_path)
    assert [p.name for p in ds.pairs] == ["b0", "b1"] and ds.name == tmp_path.name
    assert ds.labels is not None and ds.labels.format == "yolo"
    assert ds.labels.class_names == ("Person", "car") and ds.labels.classes_file == tmp_path / "labels/classes.txt"
    gt = ds.ground_truth("b0", BLOB_SIZE, BLOB_SIZE)
    np.testing.assert_allclose(gt.boxes[:4], [b for b, _ in BLOBS], atol=1e-3)
    half = ds.ground_truth("b0", BLOB_SIZE, (80, 64))  # output resized by registration.output_width/height
    np.testing.assert_allclose(half.boxes[:4], np.array([b for b, _ in BLOBS]) / 2, atol=1e-3)
    assert half.image_size == (80, 64)
    d = ds.describe()
    assert d["pairs"] == 2 and d["labels"]["format"] == "yolo" and d["missing_labels"] == 0


def test_folder_name_aliases_limit_and_unpaired(tmp_path: Path) -> None:
    _pairs(tmp_path, ["a", "b", "c"], ir="Infrared", vis="visible")
    cv2.imwrite(str(tmp_path / "visible" / "lonely.png"), np.zeros((24, 32, 3), np.uint8))
    ds = open_dataset(tmp_path, limit=2)
    assert ds.ir_dir.name == "Infrared" and [p.name for p in ds.pairs] == ["a", "b"]
    assert ds.unpaired == (0, 1) and ds.labels is None


def test_yolo_subfolders_default_to_fusion_or_take_labels_option(tmp_path: Path) -> None:
    _pairs(tmp_path, ["a", "b"])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "classes.txt").write_text("0 person\n1 car\n")
    for sub, line in (("fusion", "0 0.5 0.5 0.5 0.5"), ("infrared", "1 0.5 0.5 0.25 0.25")):
        (tmp_path / "labels" / sub).mkdir()
        (tmp_path / "labels" / sub / "a.txt").write_text(line + "\n")
    ds = open_dataset(tmp_path)
    assert ds.labels.path == tmp_path / "labels" / "fusion" and ds.labels.class_names == ("person", "car")
    assert ds.missing_labels == ["b"]  # b has no file: no objects
    assert len(ds.ground_truth("b", (32, 24), (32, 24))) == 0
    ds = open_dataset(tmp_path, labels="labels/infrared")  # relative to the data set
    assert ds.labels.path == tmp_path / "labels" / "infrared"
    assert ds.ground_truth("a", (32, 24), (32, 24)).names() == ["car"]
    (tmp_path / "labels" / "fusion" / "a.txt").unlink()
    (tmp_path / "labels" / "fusion").rmdir()
    with pytest.raises(InputError, match=r"several annotation folders \(infrared, visible\).*--labels"):
        (tmp_path / "labels" / "visible").mkdir()
        (tmp_path / "labels" / "visible" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        open_dataset(tmp_path)


def test_yolo_classes_lookup_and_errors(tmp_path: Path) -> None:
    _pairs(tmp_path, ["a"])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    with pytest.raises(InputError, match=r"YOLO labels in .*labels need class names: no classes.txt .*--classes"):
        open_dataset(tmp_path)
    (tmp_path / "classes.txt").write_text("dog\n")  # data set root is the last place looked at
    assert open_dataset(tmp_path).labels.class_names == ("dog",)
    other = tmp_path / "names.txt"
    other.write_text("cat\n")
    assert open_dataset(tmp_path, classes=other).labels.class_names == ("cat",)
    with pytest.raises(InputError, match=r"--classes: no such file: .*nope.txt"):
        open_dataset(tmp_path, classes=tmp_path / "nope.txt")


def test_malformed_label_fails_before_running(tmp_path: Path) -> None:
    write_blob_dataset(tmp_path, n=2)
    (tmp_path / "labels" / "b1.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(InputError, match=r"b1\.txt:1: expected 5 fields"):
        open_dataset(tmp_path)


def test_labels_matching_no_pair_are_an_error_extra_labels_are_counted(tmp_path: Path) -> None:
    write_blob_dataset(tmp_path, n=2)
    (tmp_path / "labels" / "unrelated.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert open_dataset(tmp_path).unused_labels == 1
    for p in (tmp_path / "labels").glob("b*.txt"):
        p.rename(p.with_name("frame_" + p.name))
    with pytest.raises(InputError, match=r"label/image mismatch: none of the 2 pair\(s\) in .*vi has a label in "):
        open_dataset(tmp_path)


def test_voc_annotations_and_size_mismatch(tmp_path: Path) -> None:
    _pairs(tmp_path, ["a", "b"], size=(32, 24))
    _voc(tmp_path / "Annotations" / "a.xml", (32, 24), [("person", (1, 2, 11, 22)), ("car", (5, 5, 9, 9))])
    _voc(tmp_path / "Annotations" / "b.xml", (64, 48), [("person", (1, 2, 11, 22))])
    _voc(tmp_path / "Annotations" / "zzz.xml", None, [("bus", (1, 1, 2, 2))])  # not a pair: not parsed
    ds = open_dataset(tmp_path)
    assert ds.labels.format == "voc" and ds.labels.class_names == ("person", "car") and ds.unused_labels == 1
    gt = ds.ground_truth("a", (32, 24), (64, 48))  # scaled to the output size
    np.testing.assert_allclose(gt.boxes, [[2, 4, 22, 44], [10, 10, 18, 18]])
    with pytest.raises(InputError, match=r"b\.xml: label/image mismatch: the label is for a 64x48 image, but "
                                         r".*b\.jpg is 32x24"):
        ds.ground_truth("b", (32, 24), (32, 24))


def test_coco_json_by_file_stem(tmp_path: Path) -> None:
    _pairs(tmp_path, ["a", "b"])
    coco = {
        "images": [{"id": 1, "file_name": "visible/a.jpg", "width": 32, "height": 24},
                   {"id": 2, "file_name": "visible/other.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 20]}],
        "categories": [{"id": 7, "name": "person"}],
    }  # fmt: skip
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances.json").write_text(json.dumps(coco))
    ds = open_dataset(tmp_path)
    assert ds.labels.format == "coco" and ds.labels.class_names == ("person",)
    assert ds.missing_labels == ["b"] and ds.unused_labels == 1
    np.testing.assert_allclose(ds.ground_truth("a", (32, 24), (32, 24)).boxes, [[1, 2, 11, 22]])
    with pytest.raises(ConfigError, match=r"--classes applies to YOLO and VOC labels"):
        other = tmp_path / "c.txt"
        other.write_text("x\n")
        open_dataset(tmp_path, classes=other)


def test_explicit_folders_and_several_data_sets(tmp_path: Path) -> None:
    _pairs(tmp_path / "one", ["a"])
    _pairs(tmp_path / "two" / "one", ["b"])  # same folder name: made unique
    ds = open_datasets(f"{tmp_path / 'one'}, {tmp_path / 'two' / 'one'}")
    assert [d.name for d in ds] == ["one", "one-2"]
    ds = open_datasets(None, ir=tmp_path / "one" / "ir", vis=tmp_path / "one" / "vi")
    assert len(ds) == 1 and ds[0].root is None and ds[0].name == "one"
    with pytest.raises(ConfigError, match=r"--ir/--vis select the folders of one data set"):
        open_datasets(f"{tmp_path / 'one'},{tmp_path / 'two' / 'one'}", ir=tmp_path, vis=tmp_path)
    with pytest.raises(ConfigError, match=r"--ir and --vis go together"):
        open_dataset(tmp_path / "one", ir="ir")
    with pytest.raises(ConfigError, match=r"no data set given"):
        open_datasets("")


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (lambda p: None, {"path": "missing"}, r"data set: no such folder: .*missing"),
        (lambda p: (p / "ir").mkdir(), {},
         r"no visible image folder \(looked for vi/, vis/, visible/, rgb/; found ir/\)"),
        (lambda p: _pairs(p, ["a"]), {"labels": "nolabels"},
         r"--labels: no such file or folder: nolabels or .*nolabels"),
        (lambda p: _pairs(p, ["a"]), {"ir": "ir", "vis": "nope"}, r"--vis: no such folder: .*nope"),
        (lambda p: (_pairs(p, ["a"]), (p / "vi" / "a.jpg").rename(p / "vi" / "b.jpg")), {},
         r"no image pairs: no file names in common between .*ir \(1 images\) and .*vi \(1 images\)"),
        (lambda p: (_pairs(p, ["a"]), (p / "labels").mkdir()), {}, r"labels: no label files \(\*\.txt\)"),
    ],
)  # fmt: skip
def test_clean_errors(tmp_path: Path, setup, kwargs: dict, message: str) -> None:
    setup(tmp_path)
    path = tmp_path / kwargs.pop("path", "")
    with pytest.raises(InputError, match=message):
        open_dataset(path, **kwargs)
