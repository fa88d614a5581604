"""The one typed configuration of the pipeline, the CLI and the ROS node.

The schema is a tree of frozen dataclasses. Each field carries its documentation, range and choices in
``dataclasses.field(metadata=...)`` so that three consumers read the same source of truth:

* :func:`load_config` reads a YAML file in ROS 2 parameter-file form
  (``ivfusion_node: {ros__parameters: {...}}``, nested dicts or dotted keys) and validates it;
* the ROS node declares one ROS parameter per :func:`iter_fields` entry (name ``section.key``) with the
  description and range from here;
* ``ivfusion config`` prints the table that the README's parameter section shows.

Validation errors are :class:`~ivfusion_ros.errors.ConfigError` and name the dotted key at fault.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ivfusion_ros.errors import ConfigError

__all__ = [
    "DetectorConfig",
    "FieldSpec",
    "FusionConfig",
    "IlluminationConfig",
    "NodeConfig",
    "PipelineConfig",
    "RegistrationConfig",
    "RuntimeConfig",
    "SyncConfig",
    "ThermalConfig",
    "config_from_flat",
    "config_to_flat",
    "dump_ros_yaml",
    "iter_fields",
    "load_config",
    "update_config",
]

IDENTITY_H: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def param(
    default: Any,
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    runtime: bool = True,
) -> Any:
    """A documented config field.

    Args:
        default: default value (tuples for list-valued parameters, so configs stay hashable).
        doc: one-line description; shown by ``ivfusion config`` and as the ROS parameter description.
        lo, hi: inclusive numeric range (for lists, applied to every element).
        choices: the closed set of allowed strings.
        runtime: False when changing the value needs models or buffers rebuilt (the node then reloads the
            pipeline between frames instead of patching it in place).
    """
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "runtime": runtime}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ThermalConfig:
    """How raw thermal images become an 8-bit-range intensity in [0, 1]."""

    agc: str = param(
        "percentile",
        "Automatic gain control for 16-bit / float thermal images: percentile (robust), minmax, or fixed.",
        choices=("percentile", "minmax", "fixed"),
    )
    low_percentile: float = param(1.0, "Lower percentile mapped to black by percentile AGC.", lo=0.0, hi=50.0)
    high_percentile: float = param(
        99.0, "Upper percentile mapped to white by percentile AGC.", lo=50.0, hi=100.0
    )
    fixed_min: float = param(0.0, "Raw value mapped to black when agc is fixed (e.g. counts or centi-K).")
    fixed_max: float = param(65535.0, "Raw value mapped to white when agc is fixed.")
    agc_smoothing: float = param(
        0.8,
        "Temporal smoothing of the AGC range across frames (0 = none, 0.95 = very slow); avoids flicker.",
        lo=0.0,
        hi=0.99,
    )
    invert: bool = param(False, "Invert thermal intensity (for black-hot cameras).")


@dataclass(frozen=True)
class RegistrationConfig:
    """Geometric alignment of the thermal image onto the RGB camera's pixel grid."""

    homography: tuple[float, ...] = param(
        IDENTITY_H,
        "Row-major 3x3 homography mapping thermal pixels to RGB pixels (9 numbers). Identity with "
        "different image sizes means a plain resize.",
        runtime=False,
    )
    output_width: int = param(0, "Width of the fused output in pixels (0 = RGB width).", lo=0, hi=16384)
    output_height: int = param(0, "Height of the fused output in pixels (0 = RGB height).", lo=0, hi=16384)


@dataclass(frozen=True)
class IlluminationConfig:
    """Scene illumination: the global level, the day/dusk/night regime and the glare mask."""

    night_threshold: float = param(
        0.18, "Mean RGB luminance (0..1) below which the scene is night.", lo=0.0, hi=1.0
    )
    day_threshold: float = param(
        0.35, "Mean RGB luminance (0..1) above which the scene is day; between the two it is dusk.", lo=0.0,
        hi=1.0,
    )
    hysteresis: float = param(
        0.03,
        "Margin around each threshold that the level must cross before the regime changes (no flicker).",
        lo=0.0,
        hi=0.5,
    )
    glare_threshold: float = param(
        0.9, "Luminance (0..1) at and above which a pixel belongs to a light source / glare.", lo=0.0, hi=1.0
    )
    glare_min_area: float = param(
        0.0005,
        "Smallest glare blob kept, as a fraction of the image area (removes specular speckles).",
        lo=0.0,
        hi=1.0,
    )
    map_scale: float = param(
        0.05,
        "Smoothing of the per-pixel illumination map, as a fraction of the image width.",
        lo=0.001,
        hi=0.5,
    )


@dataclass(frozen=True)
class FusionConfig:
    """Which fusion variant runs, and the parameters of the training-free ``adaptive`` fusion."""

    variant: str = param(
        "adaptive", "Fusion variant (see `ivfusion variants`): adaptive, average, max, ...", runtime=False
    )
    variant_day: str = param("", "Variant used in the day regime ('' = variant).", runtime=False)
    variant_night: str = param("", "Variant used in the night regime ('' = variant).", runtime=False)
    weights: str = param("", "Weights file for learned variants ('' = the shipped weights).", runtime=False)
    backend: str = param(
        "torch",
        "Runtime of learned variants' networks: torch, onnxruntime or tensorrt (.pt weights are exported to ONNX "
        "for the last two; .onnx weights run on onnxruntime unless tensorrt is chosen).",
        choices=("torch", "onnxruntime", "tensorrt"),
        runtime=False,
    )
    levels: int = param(4, "Pyramid levels of the multi-scale fusion.", lo=1, hi=8, runtime=False)
    ir_weight_dark: float = param(
        1.0, "adaptive: share of the thermal base taken where it is brighter than the visible one, in dark regions.",
        lo=0.0, hi=1.0,
    )
    ir_weight_bright: float = param(
        0.6, "adaptive: the same share where the RGB image is well lit (warm targets still stand out).",
        lo=0.0, hi=1.0,
    )
    dark_level: float = param(
        0.2, "Local illumination (0..1) below which a region counts as dark.", lo=0.0, hi=1.0
    )
    bright_level: float = param(
        0.5, "Local illumination (0..1) above which a region counts as well lit.", lo=0.0, hi=1.0
    )
    glare_suppression: float = param(
        0.8, "How strongly glare regions are replaced by thermal structure (0 = keep the glare).", lo=0.0,
        hi=1.0,
    )
    light_normalization: float = param(
        0.25, "Strength of the step that lifts dim regions (not black ones) and compresses over-exposed ones.",
        lo=0.0, hi=1.0,
    )
    detail_gain: float = param(1.2, "Gain on the fused detail (Laplacian) layers.", lo=0.0, hi=4.0)
    detail_noise: float = param(
        1.0, "adaptive: visible detail in dark regions is shrunk where its energy is below this many noise "
        "standard deviations (measured per frame); 0 = keep sensor noise.", lo=0.0, hi=10.0,
    )


@dataclass(frozen=True)
class DetectorConfig:
    """Object detection on the fused (or one source) image."""

    type: str = param(
        "ivdet",
        "Detector: ivdet (the package's person/bicycle/car detector for fused, thermal and RGB images; shipped "
        "weights), hog (OpenCV people detector, no weights), yolo (your YOLO model), or none.",
        choices=("ivdet", "hog", "yolo", "none"),
        runtime=False,
    )
    model: str = param(
        "", "Model file. ivdet: '' = the shipped weights, or a train-detector .pt (torch) / .onnx; yolo: an .onnx "
        "file (onnxruntime, tensorrt) or a TorchScript file (torch).",
        runtime=False,
    )
    backend: str = param(
        "onnxruntime", "Runtime of the ivdet or yolo model: onnxruntime, tensorrt or torch.",
        choices=("onnxruntime", "tensorrt", "torch"), runtime=False,
    )
    input: str = param(
        "fused", "Image the detector sees: fused, rgb or thermal.", choices=("fused", "rgb", "thermal")
    )
    layout: str = param(
        "auto",
        "YOLO output layout: auto, yolov5 ([1,N,5+C]), yolov8 ([1,4+C,N]) or end2end ([1,K,6]).",
        choices=("auto", "yolov5", "yolov8", "end2end"),
        runtime=False,
    )
    score_threshold: float = param(0.25, "Minimum detection score.", lo=0.0, hi=1.0)
    nms_threshold: float = param(0.45, "IoU above which class-wise NMS removes the weaker box.", lo=0.0, hi=1.0)
    max_detections: int = param(100, "Maximum detections kept per frame.", lo=1, hi=10000)
    input_size: tuple[int, ...] = param(
        (0, 0),
        "Network input [width, height] for ivdet/yolo ([0, 0] = from the model, else 640x640).",
        lo=0,
        hi=8192,
        runtime=False,
    )
    class_names: tuple[str, ...] = param(
        (), "Class names by index ([] = from class_names_file, the model metadata, or COCO).", runtime=False
    )
    class_names_file: str = param("", "Text file with one class name per line.", runtime=False)
    hog_hit_threshold: float = param(
        0.3, "SVM margin a HOG window needs to count as a person.", lo=-2.0, hi=5.0
    )
    hog_scale: float = param(1.05, "Pyramid scale step of the HOG detector.", lo=1.01, hi=2.0)


@dataclass(frozen=True)
class RuntimeConfig:
    """Where the pipeline runs."""

    device: str = param(
        "auto", "Compute device: auto (CUDA when available), cpu or cuda.", choices=("auto", "cpu", "cuda"),
        runtime=False,
    )
    threads: int = param(0, "CPU threads for torch and ONNX Runtime (0 = library default).", lo=0, hi=256,
                         runtime=False)
    precision: str = param(
        "auto",
        "Network arithmetic: auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16, bf16, or int8 (tensorrt only, needs "
        "calibration_dir).",
        choices=("auto", "fp32", "fp16", "bf16", "int8"),
        runtime=False,
    )
    cuda_graphs: bool = param(
        True, "Replay CUDA graphs of the torch networks for each input size (CUDA only).", runtime=False
    )
    channels_last: bool = param(True, "Run torch networks in channels-last memory layout (CUDA only).",
                                runtime=False)
    compile: bool = param(False, "torch.compile the torch networks (slow first frames; CUDA mainly).", runtime=False)
    engine_cache: str = param(
        "", "Folder of built TensorRT engines and exported ONNX files ('' = ~/.cache/ivfusion/engines).", runtime=False
    )
    calibration_dir: str = param("", "Folder of images for TensorRT int8 calibration.", runtime=False)


@dataclass(frozen=True)
class SyncConfig:
    """Pairing of thermal and RGB messages by time stamp (the node and the bag replay share it)."""

    slop: float = param(
        0.05, "Largest stamp difference (s) between a thermal and an RGB image of one pair.", lo=0.0, hi=10.0,
        runtime=False,
    )
    queue_size: int = param(10, "Messages per camera held while looking for a partner.", lo=1, hi=1000,
                            runtime=False)


@dataclass(frozen=True)
class NodeConfig:
    """ROS-only settings: QoS, health monitoring and output formats (ignored by the offline tools)."""

    reliability: str = param(
        "best_effort", "QoS reliability of the camera subscriptions.", choices=("best_effort", "reliable"),
        runtime=False,
    )
    qos_depth: int = param(5, "QoS history depth of the camera subscriptions.", lo=1, hi=1000, runtime=False)
    compressed: bool = param(False, "Subscribe to sensor_msgs/CompressedImage instead of Image.", runtime=False)
    camera_timeout: float = param(
        1.0, "Seconds without messages after which a camera counts as stopped.", lo=0.05, hi=60.0
    )
    degraded_mode: str = param(
        "single",
        "When one camera stops: single (detect on the live camera alone) or pause.",
        choices=("single", "pause"),
    )
    class_id_format: str = param(
        "name", "Detection2D class_id: the class name or its index.", choices=("name", "index")
    )
    publish_fused: bool = param(True, "Publish the fused image.")
    diagnostics_period: float = param(1.0, "Seconds between diagnostics messages.", lo=0.1, hi=60.0)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline and the node are configured with; one YAML file holds it all."""

    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    illumination: IlluminationConfig = field(default_factory=IlluminationConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    node: NodeConfig = field(default_factory=NodeConfig)

    def __post_init__(self) -> None:
        _check_cross_fields(self)


@dataclass(frozen=True)
class FieldSpec:
    """One leaf parameter of the schema, as the node and the docs see it."""

    name: str  # dotted, e.g. "fusion.variant"
    type: type
    elem_type: type | None  # element type for tuple-valued parameters
    default: Any
    doc: str
    lo: float | None
    hi: float | None
    choices: tuple[str, ...] | None
    runtime: bool


def _section_types() -> dict[str, type]:
    hints = get_type_hints(PipelineConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(PipelineConfig)}


def iter_fields() -> Iterator[FieldSpec]:
    """Yield every leaf parameter of the schema in declaration order."""
    for section, cls in _section_types().items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            origin = getattr(tp, "__origin__", None)
            elem = tp.__args__[0] if origin is tuple else None
            yield FieldSpec(
                name=f"{section}.{f.name}",
                type=tuple if origin is tuple else tp,
                elem_type=elem,
                default=f.default,
                doc=f.metadata["doc"],
                lo=f.metadata["lo"],
                hi=f.metadata["hi"],
                choices=f.metadata["choices"],
                runtime=f.metadata["runtime"],
            )


_SPECS: dict[str, FieldSpec] = {}


def _specs() -> dict[str, FieldSpec]:
    if not _SPECS:
        _SPECS.update({s.name: s for s in iter_fields()})
    return _SPECS


def _coerce_scalar(name: str, value: Any, tp: type, spec: FieldSpec) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{name}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(spec.choices)}")
        return value
    if spec.lo is not None and value < spec.lo:
        raise ConfigError(f"{name}: {value} is below the minimum {spec.lo}")
    if spec.hi is not None and value > spec.hi:
        raise ConfigError(f"{name}: {value} is above the maximum {spec.hi}")
    return value


def coerce_value(name: str, value: Any) -> Any:
    """Check one parameter value against the schema and return it in its canonical Python type.

    Raises:
        ConfigError: unknown name, wrong type, value out of range or not among the choices.
    """
    specs = _specs()
    if name not in specs:
        close = difflib.get_close_matches(name, specs, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown parameter {name!r}{hint}")
    spec = specs[name]
    if spec.type is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        assert spec.elem_type is not None
        return tuple(_coerce_scalar(f"{name}[{i}]", v, spec.elem_type, spec) for i, v in enumerate(value))
    return _coerce_scalar(name, value, spec.type, spec)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_from_flat(flat: Mapping[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
    """Build a config from ``{"section.key": value}`` pairs on top of ``base`` (default: the defaults)."""
    base = base or PipelineConfig()
    per_section: dict[str, dict[str, Any]] = {}
    for name, value in flat.items():
        coerced = coerce_value(name, value)
        section, key = name.split(".", 1)
        per_section.setdefault(section, {})[key] = coerced
    sections = {s: dataclasses.replace(getattr(base, s), **kv) for s, kv in per_section.items()}
    return dataclasses.replace(base, **sections)


def update_config(cfg: PipelineConfig, **flat: Any) -> PipelineConfig:
    """Return ``cfg`` with dotted overrides given as keyword pairs, e.g. ``**{"fusion.variant": "max"}``."""
    return config_from_flat(flat, base=cfg)


def config_to_flat(cfg: PipelineConfig) -> dict[str, Any]:
    """The inverse of :func:`config_from_flat`: every leaf as ``{"section.key": value}``."""
    return {spec.name: getattr(getattr(cfg, spec.name.split(".")[0]), spec.name.split(".")[1])
            for spec in iter_fields()}


def _ros_parameters(doc: Any, path: str) -> Mapping[str, Any]:
    """Find the ``ros__parameters`` mapping of a ROS 2 parameter file (any node name, incl. ``/**``)."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if "ros__parameters" in doc:
        return doc["ros__parameters"] or {}
    nodes = [v for v in doc.values() if isinstance(v, Mapping) and "ros__parameters" in v]
    if len(nodes) == 1:
        return nodes[0]["ros__parameters"] or {}
    if len(nodes) > 1:
        raise ConfigError(f"{path}: holds parameters for {len(nodes)} nodes; expected one")
    return doc  # a plain mapping of sections is accepted as well


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Load and validate a YAML parameter file; ``None`` gives the defaults.

    Args:
        path: YAML in ROS 2 parameter-file form (``node_name: {ros__parameters: {...}}``), or a plain
            mapping of sections.
        overrides: dotted-key overrides applied after the file (what the CLI's ``--set`` passes).

    Raises:
        ConfigError: unreadable file, invalid YAML, or an invalid parameter (the message names it).
    """
    flat: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config {p}: {err.strerror or err}") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: invalid YAML: {err}") from None
        flat.update(_flatten(_ros_parameters(doc, str(p))))
    if overrides:
        flat.update(overrides)
    try:
        return config_from_flat(flat)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None


def dump_ros_yaml(cfg: PipelineConfig, node_name: str = "/**/ivfusion_node", comments: bool = True) -> str:
    """Render ``cfg`` as a ROS 2 parameter file that :func:`load_config` reads back unchanged.

    With ``comments`` every parameter is preceded by its description, range and choices, which is how
    ``config/fusion.yaml`` documents itself. The default node key ``/**/ivfusion_node`` matches the node in
    any namespace (a plain ``ivfusion_node`` key only matches it in the root namespace).
    """
    flat = config_to_flat(cfg)
    lines = [f"{node_name}:", "  ros__parameters:"]
    section = ""
    for spec in iter_fields():
        sec, key = spec.name.split(".", 1)
        if sec != section:
            section = sec
            if comments:
                doc = (type(getattr(cfg, sec)).__doc__ or "").strip().splitlines()[0]
                lines.append(f"    # --- {doc}")
            lines.append(f"    {sec}:")
        value = flat[spec.name]
        text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True,
                              width=1000).strip()
        text = text.removesuffix("\n...").strip()
        if comments:
            extra = []
            if spec.choices:
                extra.append("one of " + ", ".join(spec.choices))
            if spec.lo is not None or spec.hi is not None:
                extra.append(f"range [{spec.lo}, {spec.hi}]")
            if not spec.runtime:
                extra.append("changing it reloads the pipeline")
            suffix = f" ({'; '.join(extra)})" if extra else ""
            lines.append(f"      # {spec.doc}{suffix}")
        lines.append(f"      {key}: {text}")
    return "\n".join(lines) + "\n"


def _check_cross_fields(cfg: PipelineConfig) -> None:
    ill = cfg.illumination
    if ill.night_threshold >= ill.day_threshold:
        raise ConfigError(
            f"illumination.night_threshold ({ill.night_threshold}) must be below "
            f"illumination.day_threshold ({ill.day_threshold})"
        )
    th = cfg.thermal
    if th.low_percentile >= th.high_percentile:
        raise ConfigError("thermal.low_percentile must be below thermal.high_percentile")
    if th.fixed_min >= th.fixed_max:
        raise ConfigError("thermal.fixed_min must be below thermal.fixed_max")
    if len(cfg.registration.homography) != 9:
        raise ConfigError(
            f"registration.homography: expected 9 numbers (row-major 3x3), got {len(cfg.registration.homography)}"
        )
    h = cfg.registration.homography
    det = (h[0] * (h[4] * h[8] - h[5] * h[7]) - h[1] * (h[3] * h[8] - h[5] * h[6])
           + h[2] * (h[3] * h[7] - h[4] * h[6]))
    if abs(det) < 1e-12:
        raise ConfigError("registration.homography: the matrix is singular (not invertible)")
    if len(cfg.detector.input_size) != 2:
        raise ConfigError("detector.input_size: expected [width, height]")
    if cfg.fusion.dark_level >= cfg.fusion.bright_level:
        raise ConfigError("fusion.dark_level must be below fusion.bright_level")
