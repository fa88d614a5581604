from __future__ import annotations

from pathlib import Path

import pytest

from ivfusion_ros.config import (
    PipelineConfig,
    config_to_flat,
    dump_ros_yaml,
    iter_fields,
    load_config,
    update_config,
)
from ivfusion_ros.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_shipped_parameter_files_load() -> None:
    files = sorted((ROOT / "config").glob("*.yaml"))
    assert files, "config/ has no parameter files"
    for f in files:
        load_config(f)
    assert load_config(ROOT / "config" / "fusion.yaml") == PipelineConfig()


def test_ros_parameter_file_form(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, """
ivfusion_node:
  ros__parameters:
    fusion:
      variant: max
    illumination:
      night_threshold: 0.1
      day_threshold: 1      # an int where a float is expected is fine, as in ROS
    detector.score_threshold: 0.5
"""))
    assert cfg.fusion.variant == "max"
    assert cfg.illumination.day_threshold == 1.0 and isinstance(cfg.illumination.day_threshold, float)
    assert cfg.detector.score_threshold == 0.5


def test_wildcard_node_name(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "/**:\n  ros__parameters:\n    fusion: {levels: 3}\n"))
    assert cfg.fusion.levels == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("n:\n  ros__parameters:\n    fusion: {varient: max}\n",
         r"unknown parameter 'fusion.varient' \(did you mean fusion.variant\?\)"),
        ("n:\n  ros__parameters:\n    fusion: {levels: 2.5}\n", "fusion.levels: expected an integer"),
        ("n:\n  ros__parameters:\n    fusion: {levels: 0}\n", "fusion.levels: 0 is below the minimum 1"),
        ("n:\n  ros__parameters:\n    detector: {type: ssd}\n", "detector.type: 'ssd' is not one of ivdet"),
        ("n:\n  ros__parameters:\n    thermal: {invert: 1}\n", "thermal.invert: expected true or false"),
        ("n:\n  ros__parameters:\n    registration: {homography: [1, 0, 0]}\n",
         "registration.homography: expected 9 numbers"),
        ("n:\n  ros__parameters:\n    registration: {homography: [1, 0, 0, 0, 1, 0, 0, 0, x]}\n",
         r"registration.homography\[8\]: expected a number"),
        ("n:\n  ros__parameters:\n    registration: {homography: [0, 0, 0, 0, 0, 0, 0, 0, 0]}\n",
         "singular"),
        ("n:\n  ros__parameters:\n    illumination: {night_threshold: 0.5, day_threshold: 0.4}\n",
         "night_threshold .* must be below illumination.day_threshold"),
        ("n: [1, 2\n", "invalid YAML"),
    ],
)
def test_errors_name_the_bad_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config /nonexistent.yaml"):
        load_config("/nonexistent.yaml")


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = update_config(PipelineConfig(), **{"fusion.variant": "average", "detector.class_names": ["a", "b"],
                                             "registration.homography": [1, 0, 5, 0, 1, -3, 0, 0, 1]})
    assert load_config(_write(tmp_path, dump_ros_yaml(cfg))) == cfg


def test_overrides_apply_after_the_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "n:\n  ros__parameters:\n    fusion: {variant: max}\n")
    assert load_config(p, {"fusion.variant": "average"}).fusion.variant == "average"


def test_every_field_is_documented_and_in_the_default_file() -> None:
    shipped = config_to_flat(load_config(ROOT / "config" / "fusion.yaml"))
    text = (ROOT / "config" / "fusion.yaml").read_text()
    for spec in iter_fields():
        assert len(spec.doc) > 15, spec.name
        assert spec.name in shipped
        assert f"{spec.name.split('.')[1]}:" in text, f"{spec.name} missing from config/fusion.yaml"
