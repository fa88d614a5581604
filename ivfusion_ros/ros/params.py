"""ROS parameters of the node, declared from the one config schema (:mod:`ivfusion_ros.config`).

Every :func:`~ivfusion_ros.config.iter_fields` entry becomes one ROS parameter named ``section.key`` with
its description, range (``IntegerRange``/``FloatingPointRange`` for scalars) and choices (listed in
``additional_constraints`` and enforced by the set-parameters callback). Values come from the parameter file
the launch file passes (``config/fusion.yaml``) and are turned back into a
:class:`~ivfusion_ros.config.PipelineConfig` by the same validation the CLI uses.

The pure half (:func:`parameter_declarations`, :func:`config_from_parameters`, :func:`plan_change`) does not
import ROS and is unit-tested without it; :func:`declare_parameters` and :func:`set_result` import rclpy
when called.
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ivfusion_ros.config import FieldSpec, PipelineConfig, config_from_flat, config_to_flat, iter_fields
from ivfusion_ros.errors import ConfigError

__all__ = [
    "ChangePlan",
    "ParamDecl",
    "config_from_parameters",
    "declare_parameters",
    "from_ros_value",
    "parameter_declarations",
    "plan_change",
    "read_config",
    "set_result",
    "to_ros_value",
]

_SCALAR_TYPES = {bool: "BOOL", int: "INTEGER", float: "DOUBLE", str: "STRING"}

#: Node fields whose change re-creates the camera subscriptions and the synchronizer.
INPUT_FIELDS = frozenset({"sync.slop", "sync.queue_size", "node.reliability", "node.qos_depth", "node.compressed"})


@dataclass(frozen=True)
class ParamDecl:
    """What the node declares for one schema field, as plain data.

    Attributes:
        name: dotted parameter name, e.g. ``fusion.variant``.
        type: name of the ``rclpy.Parameter.Type`` member (``DOUBLE``, ``STRING_ARRAY``, ...).
        default: default value in ROS form (lists for arrays); ``None`` for an empty array, which is
            declared typed but unset (ROS cannot infer the type of ``[]``) and read back as the schema
            default.
        description: the schema's doc, plus the array range and whether a change reloads the pipeline.
        additional_constraints: ``"one of: a, b"`` for fields with choices, else ``""``.
        integer_range / floating_point_range: ``(lo, hi)`` for scalar INTEGER / DOUBLE fields with a range.
    """

    name: str
    type: str
    default: Any
    description: str
    additional_constraints: str = ""
    integer_range: tuple[int, int] | None = None
    floating_point_range: tuple[float, float] | None = None
    read_only: bool = False


def to_ros_value(spec: FieldSpec, value: Any) -> Any:
    """A schema value in the form an rclpy parameter holds (tuples -> lists, floats stay floats)."""
    if spec.type is tuple:
        assert spec.elem_type is not None
        return [spec.elem_type(v) for v in value]
    if spec.type is float:
        return float(value)
    return value


def from_ros_value(value: Any) -> Any:
    """An rclpy parameter value in schema form (``array.array`` and tuples -> lists)."""
    if isinstance(value, (array.array, tuple)):
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def parameter_declarations() -> list[ParamDecl]:
    """One :class:`ParamDecl` per schema field, in schema order."""
    decls = []
    for spec in iter_fields():
        if spec.type is tuple:
            assert spec.elem_type is not None
            ptype = _SCALAR_TYPES[spec.elem_type] + "_ARRAY"
        else:
            ptype = _SCALAR_TYPES[spec.type]
        default = to_ros_value(spec, spec.default)
        if spec.type is tuple and len(default) == 0:
            default = None
        desc = spec.doc
        if spec.type is tuple and (spec.lo is not None or spec.hi is not None):
            desc += f" Each element in [{spec.lo}, {spec.hi}]."
        if not spec.runtime:
            desc += " Changing it at run time reloads the pipeline between frames."
        int_range = float_range = None
        if spec.lo is not None and spec.hi is not None and spec.type in (int, float):
            if spec.type is int:
                int_range = (int(spec.lo), int(spec.hi))
            else:
                float_range = (float(spec.lo), float(spec.hi))
        decls.append(ParamDecl(
            name=spec.name,
            type=ptype,
            default=default,
            description=desc,
            additional_constraints=f"one of: {', '.join(spec.choices)}" if spec.choices else "",
            integer_range=int_range,
            floating_point_range=float_range,
        ))
    return decls


def config_from_parameters(values: Mapping[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
    """Build and validate a config from ``{name: ros_value}``; ``None`` values (unset) keep ``base``'s."""
    flat = {k: from_ros_value(v) for k, v in values.items() if v is not None}
    return config_from_flat(flat, base=base)


@dataclass(frozen=True)
class ChangePlan:
    """A validated parameter change.

    Attributes:
        config: the configuration after the change.
        changed: dotted names whose value differs from the current configuration.
        structural: the subset that needs a pipeline rebuild (schema ``runtime=False``).
        inputs: the subset that re-creates the subscriptions (:data:`INPUT_FIELDS`).
    """

    config: PipelineConfig
    changed: tuple[str, ...]
    structural: tuple[str, ...]
    inputs: tuple[str, ...]


def plan_change(current: PipelineConfig, values: Mapping[str, Any]) -> ChangePlan:
    """Validate a set of parameter changes together (types, ranges, choices, cross-field rules).

    Raises:
        ConfigError: the message names the parameter at fault.
    """
    new = config_from_parameters(values, base=current)
    old_flat, new_flat = config_to_flat(current), config_to_flat(new)
    changed = tuple(k for k in new_flat if new_flat[k] != old_flat[k])
    runtime = {s.name: s.runtime for s in iter_fields()}
    structural = tuple(k for k in changed if not runtime[k])
    inputs = tuple(k for k in changed if k in INPUT_FIELDS)
    return ChangePlan(new, changed, structural, inputs)


# ---------------------------------------------------------------------------------------------- rclpy side
def _descriptor(decl: ParamDecl) -> Any:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.parameter import Parameter

    d = ParameterDescriptor(
        name=decl.name,
        type=getattr(Parameter.Type, decl.type).value,
        description=decl.description,
        additional_constraints=decl.additional_constraints,
        read_only=decl.read_only,
    )
    if decl.integer_range is not None:
        d.integer_range = [IntegerRange(from_value=decl.integer_range[0], to_value=decl.integer_range[1], step=0)]
    if decl.floating_point_range is not None:
        lo, hi = decl.floating_point_range
        d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
    return d


def declare_parameters(node: Any) -> PipelineConfig:
    """Declare every schema parameter on ``node`` and return the validated configuration.

    Values given to the node (``--params-file``, launch ``parameters=[...]``) override the defaults.

    Raises:
        ConfigError: a given value breaks the schema (the message names the parameter).
    """
    from rclpy.exceptions import ParameterException
    from rclpy.parameter import Parameter

    # A YAML `1` for a double parameter (or `[1, 0, 0, ...]` for a double array) arrives as an integer
    # override, which a statically typed DOUBLE parameter rejects; the schema accepts it, so promote it here.
    overrides = getattr(node, "_parameter_overrides", {})
    for decl in parameter_declarations():
        value = getattr(Parameter.Type, decl.type) if decl.default is None else decl.default
        ignore_override = False
        given = overrides.get(decl.name)
        if given is not None and decl.type in ("DOUBLE", "DOUBLE_ARRAY"):
            if given.type_ == Parameter.Type.INTEGER:
                value, ignore_override = float(given.value), True
            elif given.type_ == Parameter.Type.INTEGER_ARRAY:
                value, ignore_override = [float(v) for v in given.value], True
        try:
            node.declare_parameter(decl.name, value, _descriptor(decl), ignore_override=ignore_override)
        except ParameterException as err:  # wrong type, out of range: name the key
            raise ConfigError(f"parameter {decl.name}: {err}") from None
    return read_config(node)


def read_config(node: Any, names: Iterable[str] | None = None) -> PipelineConfig:
    """The node's current parameter values as a validated config (unset arrays keep the schema default)."""
    names = list(names) if names is not None else [s.name for s in iter_fields()]
    values = {}
    for name in names:
        param = node.get_parameter_or(name, None)  # does not raise for a typed parameter left unset
        values[name] = None if param is None else param.value
    try:
        return config_from_parameters(values)
    except ConfigError as err:
        raise ConfigError(f"invalid node parameters: {err}") from None


def set_result(successful: bool, reason: str = "") -> Any:
    """``rcl_interfaces/SetParametersResult``."""
    from rcl_interfaces.msg import SetParametersResult

    return SetParametersResult(successful=successful, reason=reason)
