"""The node's parameter declarations against the schema and the shipped YAML, without ROS."""

from __future__ import annotations

import array
from pathlib import Path

import pytest
import yaml

from ivfusion_ros.config import PipelineConfig, config_to_flat, iter_fields, load_config
from ivfusion_ros.errors import ConfigError
from ivfusion_ros.ros.params import (
    INPUT_FIELDS,
    config_from_parameters,
    from_ros_value,
    parameter_declarations,
    plan_change,
)

ROOT = Path(__file__).resolve().parents[2]
_ROS_TYPES = {bool: "BOOL", int: "INTEGER", float: "DOUBLE", str: "STRING"}


def test_one_declaration_per_schema_field_with_type_and_range() -> None:
    decls = {d.name: d for d in parameter_declarations()}
    specs = list(iter_fields())
    assert list(decls) == [s.name for s in specs]
    for spec in specs:
        d = decls[spec.name]
        assert not d.read_only
        assert d.description.startswith(spec.doc)
        assert ("reloads the pipeline" in d.description) == (not spec.runtime)
        if spec.type is tuple:
            assert d.type == _ROS_TYPES[spec.elem_type] + "_ARRAY"
            assert d.integer_range is None and d.floating_point_range is None  # ROS ranges are scalar-only
            if spec.lo is not None:
                assert f"[{spec.lo}, {spec.hi}]" in d.description
            assert d.default == (list(spec.default) or None)  # [] is declared typed and unset
        else:
            assert d.type == _ROS_TYPES[spec.type]
            assert d.default == spec.default and type(d.default) is spec.type
            if spec.lo is not None and spec.hi is not None and spec.type is int:
                assert d.integer_range == (spec.lo, spec.hi) and d.floating_point_range is None
            elif spec.lo is not None and spec.hi is not None and spec.type is float:
                assert d.floating_point_range == (spec.lo, spec.hi) and d.integer_range is None
            else:
                assert d.integer_range is None and d.floating_point_range is None
        if spec.choices:
            assert d.additional_constraints == "one of: " + ", ".join(spec.choices)
        else:
            assert d.additional_constraints == ""
    assert decls["registration.homography"].type == "DOUBLE_ARRAY"
    assert all(isinstance(v, float) for v in decls["registration.homography"].default)
    assert decls["detector.class_names"].type == "STRING_ARRAY" and decls["detector.class_names"].default is None
    assert decls["fusion.levels"].integer_range == (1, 8)


def _ros_parameters(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    (node,) = doc.values()
    flat = {}
    for section, kv in node["ros__parameters"].items():
        for key, value in kv.items():
            flat[f"{section}.{key}"] = value
    return flat


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_yaml_values_fit_the_declared_types(path: Path) -> None:
    """What rcl would hand the node from each config file is accepted by the declarations.

    ROS refuses an integer for a DOUBLE parameter; the node promotes those (see params.declare_parameters),
    but the shipped files write doubles as doubles anyway.
    """
    decls = {d.name: d for d in parameter_declarations()}
    flat = _ros_parameters(path)
    for name, value in flat.items():
        assert name in decls, f"{path.name}: {name} is not a parameter"
        t = decls[name].type
        if t.endswith("_ARRAY"):
            assert isinstance(value, list), name
            elem = t.removesuffix("_ARRAY")
            assert all(_ROS_TYPES[type(v)] == elem for v in value), f"{path.name}: {name}={value} is not {t}"
        else:
            assert _ROS_TYPES[type(value)] == t, f"{path.name}: {name}={value!r} is not {t}"
    assert config_from_parameters(flat) == load_config(path)


def test_default_yaml_matches_the_declared_defaults() -> None:
    flat = _ros_parameters(ROOT / "config" / "fusion.yaml")
    decls = {d.name: d for d in parameter_declarations()}
    assert set(flat) == set(decls)
    for name, d in decls.items():
        assert flat[name] == (d.default if d.default is not None else []), name


def test_config_from_parameters_reads_rclpy_values() -> None:
    cfg = config_from_parameters({
        "registration.homography": array.array("d", [1, 0, 2, 0, 1, 3, 0, 0, 1]),
        "detector.input_size": array.array("q", [320, 256]),
        "detector.class_names": None,  # typed but unset: the schema default
        "fusion.variant": "max",
    })
    assert cfg.registration.homography == (1.0, 0.0, 2.0, 0.0, 1.0, 3.0, 0.0, 0.0, 1.0)
    assert cfg.detector.input_size == (320, 256) and cfg.detector.class_names == ()
    assert cfg.fusion.variant == "max"
    assert from_ros_value((1, 2)) == [1, 2] and from_ros_value("x") == "x"
    values = {d.name: d.default for d in parameter_declarations()}
    assert config_from_parameters(values) == PipelineConfig()


def test_plan_change_classifies_changes() -> None:
    cfg = PipelineConfig()
    plan = plan_change(cfg, {"illumination.night_threshold": 0.1})
    assert plan.changed == ("illumination.night_threshold",) and plan.structural == () and plan.inputs == ()
    plan = plan_change(cfg, {"fusion.variant": "max", "detector.score_threshold": 0.5})
    assert set(plan.changed) == {"fusion.variant", "detector.score_threshold"}
    assert plan.structural == ("fusion.variant",) and plan.config.fusion.variant == "max"
    plan = plan_change(cfg, {"sync.slop": 0.1, "node.reliability": "reliable"})
    assert set(plan.inputs) == {"sync.slop", "node.reliability"} <= INPUT_FIELDS
    assert plan_change(cfg, {"fusion.levels": 4}).changed == ()
    # two values that are only valid together are checked together
    plan = plan_change(cfg, {"illumination.night_threshold": 0.5, "illumination.day_threshold": 0.6})
    assert plan.config.illumination.day_threshold == 0.6


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"fusion.levels": 99}, "fusion.levels: 99 is above the maximum 8"),
        ({"detector.type": "ssd"}, "detector.type: 'ssd' is not one of ivdet, hog, yolo, none"),
        ({"illumination.night_threshold": 0.5}, "must be below illumination.day_threshold"),
        ({"registration.homography": [1.0, 0.0]}, "expected 9 numbers"),
        ({"fusion.varient": "max"}, "did you mean fusion.variant"),
    ],
)
def test_plan_change_rejects_with_a_reason(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_change(PipelineConfig(), values)


def test_every_field_is_reachable_as_a_parameter() -> None:
    flat = config_to_flat(PipelineConfig())
    assert set(flat) == {d.name for d in parameter_declarations()}
