"""``evaluate`` wiring with an exact detector: known mAP for IR only, VIS only and fused, class mapping, scaling."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import pytest
from eval_data import BlobDetector, write_blob_dataset

from ivfusion_ros.config import PipelineConfig, update_config
from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval import METRICS
from ivfusion_ros.eval.dataset import open_dataset, open_datasets
from ivfusion_ros.eval.harness import evaluate, parse_metric_names, parse_variants

CPU = update_config(PipelineConfig(), **{"runtime.device": "cpu"})


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("blobs")
    write_blob_dataset(root, n=3)
    return root


def test_known_map_per_source_and_class_mapping(blobs: Path) -> None:
    res = evaluate([open_dataset(blobs)], CPU, ["max", "average"], metrics=["Qabf", "en"], detector=BlobDetector(),
                   thumbnails=1)  # fmt: skip
    det = res.detection
    assert list(det) == ["ir_only", "vis_only", "max", "average"]
    # every square is hot in thermal and survives max/average fusion: found exactly
    for src in ("ir_only", "max", "average"):
        assert det[src].map50 == 1.0 and det[src].map50_95 == 1.0, src
    # the visible camera sees half of them: precision 1 up to recall 0.5 -> 51 of 101 recall samples
    assert det["vis_only"].map50 == pytest.approx(51 / 101)
    # labels say "Person" and "car"; the detector says "person": person is scored, the car is not
    assert res.detector["evaluated_classes"] == ["Person"] and list(det["max"].per_class) == ["Person"]
    assert det["max"].ignored_gt == 3 and det["max"].num_gt == 12
    assert any("cannot output car, so those 3 ground-truth object(s) are not evaluated" in n for n in res.notes)
    # frames: one record per pair and source, baselines without fusion metrics
    assert len(res.frames) == 3 * 4
    fused = [f for f in res.frames if f.input == "fused"]
    assert all(set(f.fusion_metrics) == {"Qabf", "EN"} and math.isfinite(f.fusion_metrics["Qabf"]) for f in fused)
    assert all(f.num_gt == 4 and f.matched == 4 for f in fused)
    vis = [f for f in res.frames if f.variant == "vis_only"]
    assert all(f.input == "rgb" and f.matched == 2 and not f.fusion_metrics for f in vis)
    assert res.dataset_detection[blobs.name]["max"].map50 == 1.0
    # best and worst frame: 3 pairs, k = 1
    assert [t.kind for t in res.thumbnails] == ["best", "worst"]
    strip = res.thumbnails[0].image
    assert strip.ndim == 3 and strip.shape[1] > 3 * strip.shape[0] // 2  # IR | VIS | max | average panels
    assert "recall at IoU 0.5 of 'max'" in res.criterion


def test_ground_truth_follows_the_output_size(blobs: Path) -> None:
    cfg = update_config(CPU, **{"registration.output_width": 80, "registration.output_height": 64})
    res = evaluate([open_dataset(blobs)], cfg, ["max"], metrics=[], detector=BlobDetector(), thumbnails=0,
                   warmup=0, sequence=True)  # fmt: skip
    assert res.detection["max"].map50 == 1.0 and res.detection["ir_only"].map50 == 1.0
    assert all(not f.fusion_metrics for f in res.frames) and res.thumbnails == []
    assert not any("reset before each pair" in n for n in res.notes)


def test_unreadable_pairs_are_skipped_for_every_source(tmp_path: Path) -> None:
    write_blob_dataset(tmp_path, n=3)
    (tmp_path / "vi" / "b1.png").write_bytes(b"not a png")
    res = evaluate(open_datasets(str(tmp_path)), CPU, ["max"], metrics=["EN"], detector=BlobDetector())
    assert list(res.failed[tmp_path.name]) == ["b1"] and "cannot read image" in res.failed[tmp_path.name]["b1"]
    assert {f.name for f in res.frames} == {"b0", "b2"} and res.detection["max"].num_images == 2
    for p in (tmp_path / "ir").iterdir():
        p.write_bytes(b"")
    with pytest.raises(InputError, match="none of the pairs could be read"):
        evaluate(open_datasets(str(tmp_path)), CPU, ["max"], metrics=["EN"], detector=BlobDetector())


def test_without_labels_or_detector(tmp_path: Path) -> None:
    write_blob_dataset(tmp_path, n=2)
    for p in (tmp_path / "labels").iterdir():
        p.unlink()
    (tmp_path / "labels").rmdir()
    cfg = update_config(CPU, **{"detector.type": "none"})
    res = evaluate([open_dataset(tmp_path)], cfg, ["average"], metrics=["Nabf"], thumbnails=1)
    assert res.detection == {} and {f.variant for f in res.frames} == {"average"}
    assert any("no labels" in n for n in res.notes) and any("outputs nothing" in n for n in res.notes)
    assert res.criterion == "Nabf of 'average' (negated: lower is better)"
    assert res.thumbnails[0].score[0] <= 0


def test_variant_and_metric_names() -> None:
    assert parse_variants(" adaptive, max,adaptive ") == ["adaptive", "max"]
    with pytest.raises(ConfigError, match=r"--variants: unknown variant 'maxx'; valid: .*adaptive"):
        parse_variants("maxx")
    with pytest.raises(ConfigError, match=r"at least one fusion variant"):
        parse_variants(",")
    assert parse_metric_names(None) == list(METRICS) and parse_metric_names("qabf,EN") == ["Qabf", "EN"]
    with pytest.raises(ConfigError, match=r"--metrics: unknown fusion metric 'SSMI'"):
        parse_metric_names("SSMI")


def test_label_size_mismatch_stops_the_evaluation(tmp_path: Path) -> None:
    write_blob_dataset(tmp_path, n=1)
    (tmp_path / "labels" / "b0.txt").unlink()
    (tmp_path / "labels" / "classes.txt").unlink()
    (tmp_path / "labels").rmdir()
    ann = tmp_path / "Annotations"
    ann.mkdir()
    ann.joinpath("b0.xml").write_text("<annotation><size><width>320</width><height>256</height></size><object>"
                                      "<name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                                      "<ymax>9</ymax></bndbox></object></annotation>")  # fmt: skip
    assert cv2.imread(str(tmp_path / "vi" / "b0.png")).shape[:2] == (128, 160)
    with pytest.raises(InputError, match=r"b0\.xml: label/image mismatch: the label is for a 320x256 image"):
        evaluate([open_dataset(tmp_path)], CPU, ["max"], metrics=[], detector=BlobDetector())
