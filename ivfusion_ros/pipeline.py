"""The one pipeline every front end runs: the ROS node, ``ivfusion`` commands and the bag replay.

``Pipeline(config).process(thermal, rgb, stamp)`` decodes both images, registers thermal onto the RGB
grid, estimates illumination, fuses with the variant of the current regime, detects, and returns a
:class:`Result` with per-stage timings. Models load once in the constructor; run-time parameter changes
go through :meth:`Pipeline.update_config`, which patches what can be patched and rebuilds the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ivfusion_ros.config import PipelineConfig, config_to_flat, iter_fields
from ivfusion_ros.core.color import luma
from ivfusion_ros.core.device_frames import DeviceThermalNormalizer, HostToDevice, decode_rgb_tensor
from ivfusion_ros.core.frames import RGB_ENCODINGS, THERMAL_ENCODINGS, ThermalNormalizer, check_image, decode_rgb
from ivfusion_ros.core.illumination import IlluminationEstimator, Regime
from ivfusion_ros.core.registration import Registration
from ivfusion_ros.core.timing import StageTimer
from ivfusion_ros.detect.base import Detections, Detector
from ivfusion_ros.detect.registry import create_detector
from ivfusion_ros.errors import InputError
from ivfusion_ros.fusion.base import Fuser, FusionContext
from ivfusion_ros.fusion.registry import create_fuser
from ivfusion_ros.runtime.device import resolve_device
from ivfusion_ros.runtime.graphs import StageGraphs

__all__ = ["STAGES", "Pipeline", "Result"]

_log = logging.getLogger(__name__)

#: Stage names in processing order, as they appear in ``Result.timings``.
STAGES = ("preprocess", "register", "illumination", "fuse", "detect", "postprocess")

_DTYPE_TO_THERMAL_ENCODING = {np.dtype(np.uint8): "mono8", np.dtype(np.uint16): "mono16",
                              np.dtype(np.float32): "32FC1"}


@dataclass
class Result:
    """Output of one processed pair.

    Attributes:
        stamp: time stamp of the pair (seconds), passed through.
        fused: ``(H, W, 3)`` uint8 RGB fused image in the output frame.
        detections: detections in ``fused`` pixel coordinates.
        variant: the fusion variant that ran (depends on the regime when per-regime variants are set).
        regime: ``"day"``, ``"dusk"`` or ``"night"``.
        illumination: global illumination level in [0, 1].
        glare_fraction: share of the image covered by glare.
        timings: milliseconds per stage (see :data:`STAGES`).
        thermal: ``(H, W)`` uint8 registered thermal, when asked for (``keep_inputs=True``).
        rgb: ``(H, W, 3)`` uint8 RGB at the output size, when asked for.
        mode: ``"fused"``, or ``"rgb_only"``/``"thermal_only"`` for :meth:`Pipeline.process_single`.
    """

    stamp: float
    fused: np.ndarray
    detections: Detections
    variant: str
    regime: str
    illumination: float
    glare_fraction: float
    timings: dict[str, float] = field(default_factory=dict)
    thermal: np.ndarray | None = None
    rgb: np.ndarray | None = None
    mode: str = "fused"

    @property
    def latency_ms(self) -> float:
        return sum(self.timings.values())

    def summary(self) -> dict:
        """JSON-ready summary without the images."""
        return {
            "stamp": self.stamp,
            "mode": self.mode,
            "variant": self.variant,
            "regime": self.regime,
            "illumination": round(self.illumination, 4),
            "glare_fraction": round(self.glare_fraction, 5),
            "detections": self.detections.to_dicts(),
            "timings_ms": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _to_tensor_rgb(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float ``(1, 3, H, W)`` in [0, 1] on ``device`` (one host->device copy)."""
    if not rgb.flags.writeable:  # a view of a message buffer: torch cannot wrap read-only memory
        rgb = rgb.copy()
    t = torch.from_numpy(rgb).to(device, non_blocking=True)
    return t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def _thermal_encoding(thermal: np.ndarray, encoding: str | None) -> str:
    """``encoding``, or the one the array's dtype implies when it is ``None``."""
    if encoding is not None:
        return encoding
    inferred = _DTYPE_TO_THERMAL_ENCODING.get(getattr(thermal, "dtype", None), "")
    if not inferred:
        raise InputError(f"thermal image: cannot infer an encoding from dtype "
                         f"{getattr(thermal, 'dtype', type(thermal).__name__)}", reason="bad_encoding")
    return inferred


def _resized(vis_t: torch.Tensor, rgb_wh: tuple[int, int], out_wh: tuple[int, int]) -> torch.Tensor:
    """The RGB tensor at the output size (antialiased when shrinking)."""
    if out_wh == rgb_wh:
        return vis_t
    return torch.nn.functional.interpolate(vis_t, size=(out_wh[1], out_wh[0]), mode="bilinear", align_corners=False,
                                           antialias=True)


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """float ``(1, C, H, W)`` in [0, 1] -> uint8 ``(H, W, C)`` or ``(H, W)`` on the host."""
    out = img[0].mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out[:, :, 0] if out.shape[2] == 1 else out


class Pipeline:
    """Thermal + RGB -> fused image + detections. Not thread-safe: one instance per stream.

    Args:
        config: the configuration (defaults when ``None``).
        detector: an already built detector to use instead of the one ``config.detector`` describes
            (tests, or a torch detector the caller owns).
    """

    def __init__(self, config: PipelineConfig | None = None, *, detector: Detector | None = None) -> None:
        self.config = config or PipelineConfig()
        cfg = self.config
        self.device = resolve_device(cfg.runtime.device)
        if cfg.runtime.threads > 0:
            torch.set_num_threads(cfg.runtime.threads)
        self.thermal = ThermalNormalizer(cfg.thermal)
        self.registration = self._make_registration(cfg)
        self.illumination = IlluminationEstimator(cfg.illumination)
        self.fusers: dict[str, Fuser] = self._make_fusers(cfg, self.device)
        self.detector = detector if detector is not None else create_detector(
            cfg.detector, device=self.device.type, threads=cfg.runtime.threads, runtime=cfg.runtime)
        self.timer = StageTimer(self.device)
        self._io_device: torch.device | None = None
        self._set_device_io(self.device)
        self.frames = 0

    def _set_device_io(self, device: torch.device) -> None:
        """On CUDA: pinned staging for the camera images and the thermal gain control on the device (both kept, with
        the smoothed AGC range, while the device stays the same); the stage graphs are always started afresh."""
        cuda = device.type == "cuda"
        if self._io_device != device:
            self._upload = HostToDevice(device) if cuda else None
            self._thermal_dev = DeviceThermalNormalizer(self.thermal, device) if cuda else None
            self._io_device = device
        self._graphs = StageGraphs(cuda and self.config.runtime.cuda_graphs)

    def _make_fusers(self, cfg: PipelineConfig, device: torch.device) -> dict[str, Fuser]:
        """The variants of ``cfg``; learned ones run a warm-up frame when the output size is configured, so engine
        builds, graph captures and out-of-memory errors happen here rather than on the first camera frame."""
        fusers = {n: create_fuser(n, cfg.fusion, device, runtime=cfg.runtime) for n in self._variant_names(cfg)}
        w, h = cfg.registration.output_width, cfg.registration.output_height
        for fuser in fusers.values():
            if w and h and hasattr(fuser, "warmup"):
                fuser.warmup(h, w)
        return fusers

    @staticmethod
    def _make_registration(cfg: PipelineConfig) -> Registration:
        reg = cfg.registration
        return Registration(reg.homography, (reg.output_width, reg.output_height))

    @staticmethod
    def _variant_names(cfg: PipelineConfig) -> list[str]:
        names = [cfg.fusion.variant, cfg.fusion.variant_day, cfg.fusion.variant_night]
        return list(dict.fromkeys(n for n in names if n))

    def variant_for(self, regime: Regime | str) -> str:
        """The variant that runs in ``regime``."""
        f = self.config.fusion
        regime = Regime(regime)
        if regime is Regime.DAY and f.variant_day:
            return f.variant_day
        if regime is Regime.NIGHT and f.variant_night:
            return f.variant_night
        return f.variant

    def describe(self) -> str:
        """One line for logs and the status message."""
        return (f"variants={','.join(f.describe() for f in self.fusers.values())} "
                f"detector={self.detector.describe()} device={self.device}")

    # ------------------------------------------------------------------ configuration at run time
    def update_config(self, new: PipelineConfig) -> list[str]:
        """Apply a new configuration between frames.

        Parameters marked run-time in the schema (thresholds, weights, gains) are patched in place and
        keep state such as the regime and the AGC range; anything else (variant, model, device,
        homography, ...) rebuilds the affected parts. Building happens before anything is replaced, so a
        failing rebuild (e.g. a missing model) raises and leaves the pipeline as it was.

        Returns:
            the dotted names of the parameters that changed.
        """
        old_flat, new_flat = config_to_flat(self.config), config_to_flat(new)
        changed = [k for k in new_flat if new_flat[k] != old_flat[k]]
        if not changed:
            return []
        structural = {s.name for s in iter_fields() if not s.runtime} & set(changed)
        sections = {name.split(".")[0] for name in structural}
        fusers, detector, device = self.fusers, self.detector, self.device
        if "runtime" in sections:
            device = resolve_device(new.runtime.device)
        if "runtime" in sections or "fusion" in sections:
            fusers = self._make_fusers(new, device)
        if "runtime" in sections or "detector" in sections:
            detector = create_detector(new.detector, device=device.type, threads=new.runtime.threads,
                                       runtime=new.runtime)
        registration = self._make_registration(new) if "registration" in sections else self.registration
        # nothing above raised: commit
        self.config, self.device, self.fusers, self.detector = new, device, fusers, detector
        self.registration = registration
        self.timer = StageTimer(device)
        self._set_device_io(device)  # also forgets the captured graphs: they hold the old parameters
        for fuser in self.fusers.values():
            fuser.update_config(new.fusion)
        self.illumination.update_config(new.illumination)
        self.thermal.cfg = new.thermal
        if hasattr(self.detector, "update_config"):
            self.detector.update_config(new.detector)
        return changed

    def _thermal_tensor(self, thermal: np.ndarray, encoding: str | None) -> torch.Tensor:
        """Decode (AGC) a thermal image; ``(1, 1, H, W)`` on the device. ``None`` infers the encoding from dtype."""
        encoding = _thermal_encoding(thermal, encoding)
        if self._upload is not None and self._thermal_dev is not None:  # CUDA: raw upload, gain control there
            raw = check_image(thermal, encoding, THERMAL_ENCODINGS, "thermal")
            return self._thermal_dev(self._upload(raw), encoding)
        th = self.thermal(thermal, encoding)
        return torch.from_numpy(th).to(self.device, non_blocking=True)[None, None]

    def _rgb_tensor(self, rgb: np.ndarray, encoding: str
                    ) -> tuple[np.ndarray | None, torch.Tensor, tuple[int, int], tuple[int, int]]:
        """Decode an RGB image: ``(host RGB array or None on CUDA, (1, 3, H, W) tensor at the output size, input WH,
        output WH)``."""
        if self._upload is not None:  # CUDA: raw upload, channel order on the device
            raw = check_image(rgb, encoding, RGB_ENCODINGS, "RGB")
            vis, vis_t = None, decode_rgb_tensor(self._upload(raw), encoding)
            rgb_wh = (raw.shape[1], raw.shape[0])
        else:
            vis = decode_rgb(rgb, encoding)
            rgb_wh = (vis.shape[1], vis.shape[0])
            vis_t = _to_tensor_rgb(vis, self.device)
        out_wh = self.registration.output_size(rgb_wh)
        return vis, _resized(vis_t, rgb_wh, out_wh), rgb_wh, out_wh

    def _measure_illumination(self, vis_t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = luma(vis_t)
        return (*self.illumination.measure(y), y)

    def _inputs_on_device(self, thermal: np.ndarray, thermal_encoding: str | None, rgb: np.ndarray, rgb_encoding: str
                          ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]:
        """CUDA: check both images as the host path does, upload them raw (pinned, one copy each), decode on the
        device in one captured graph; ``(thermal, rgb, rgb WH, output WH)``."""
        assert self._upload is not None and self._thermal_dev is not None
        thermal_encoding = _thermal_encoding(thermal, thermal_encoding)
        raw_th = check_image(thermal, thermal_encoding, THERMAL_ENCODINGS, "thermal")
        raw_rgb = check_image(rgb, rgb_encoding, RGB_ENCODINGS, "RGB")
        rgb_wh = (raw_rgb.shape[1], raw_rgb.shape[0])
        out_wh = self.registration.output_size(rgb_wh)
        th_dev, rgb_dev = self._upload(raw_th), self._upload(raw_rgb)
        agc = self._thermal_dev

        def decode_rgb_at_output_size(raw: torch.Tensor) -> torch.Tensor:
            return _resized(decode_rgb_tensor(raw, rgb_encoding), rgb_wh, out_wh)

        if th_dev.dtype == torch.float32:  # 32FC1: counts invalid pixels on the host, so no graph for it
            return agc(th_dev, thermal_encoding), decode_rgb_at_output_size(rgb_dev), rgb_wh, out_wh

        def decode(th: torch.Tensor, raw: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
            ir_t, new_state = agc.decode(th, state)
            return ir_t, decode_rgb_at_output_size(raw), new_state

        ir_t, vis_t, agc.range = self._graphs.run("preprocess", decode, th_dev, rgb_dev, agc.state,
                                                  key=(thermal_encoding, rgb_encoding, out_wh))
        return ir_t, vis_t, rgb_wh, out_wh

    def reset(self) -> None:
        """Forget per-stream state (regime, AGC range), e.g. after a camera restart or a bag seek."""
        self.illumination.reset()
        self.thermal.reset()
        if self._thermal_dev is not None:
            self._thermal_dev.reset()

    # ------------------------------------------------------------------ processing
    @torch.inference_mode()
    def process(
        self,
        thermal: np.ndarray,
        rgb: np.ndarray,
        stamp: float = 0.0,
        *,
        thermal_encoding: str | None = None,
        rgb_encoding: str = "rgb8",
        keep_inputs: bool = False,
    ) -> Result:
        """Fuse and detect one registered-in-time pair.

        Args:
            thermal: thermal image as its camera delivers it (uint8, uint16 or float32; see
                :data:`~ivfusion_ros.core.frames.THERMAL_ENCODINGS`).
            rgb: visible image, ``(H, W, 3)`` uint8 in ``rgb_encoding`` (or ``(H, W)`` for mono8).
            stamp: time stamp of the pair, passed through to the result.
            thermal_encoding: ROS encoding of ``thermal``; ``None`` infers it from the dtype.
            rgb_encoding: ROS encoding of ``rgb``.
            keep_inputs: also return the registered thermal and the RGB image (for strips and metrics).

        Raises:
            InputError: an image cannot be decoded (the message says why; ``err.reason`` is the drop key).
        """
        timer = self.timer
        timer.reset()
        graphs = self._graphs  # CUDA graphs of the pure device stages (plain calls on the CPU)
        with timer.stage("preprocess"):
            if self._upload is not None:
                vis = None
                ir_t, vis_t, rgb_wh, out_wh = self._inputs_on_device(thermal, thermal_encoding, rgb, rgb_encoding)
            else:
                ir_t = self._thermal_tensor(thermal, thermal_encoding)
                vis, vis_t, rgb_wh, out_wh = self._rgb_tensor(rgb, rgb_encoding)
        with timer.stage("register"):
            ir_t = graphs.run("register", lambda x: (self.registration.warp(x, rgb_wh),), ir_t, key=rgb_wh)[0]
        with timer.stage("illumination"):
            *maps, y = graphs.run("illumination", self._measure_illumination, vis_t)
            ill = self.illumination.finish(*maps)
            variant = self.variant_for(ill.regime)
        with timer.stage("fuse"):
            fuser = self.fusers[variant]
            if fuser.graph_safe:
                fused_t = graphs.run(f"fuse:{variant}", lambda ir, v, vy, m, g: (
                    fuser.fuse(ir, v, FusionContext(m, g, 0.0, "", vis_y=vy)),), ir_t, vis_t, y, ill.map, ill.glare)[0]
            else:  # learned variants: their backend has its own graphs or engines
                fused_t = fuser.fuse(ir_t, vis_t, FusionContext(ill.map, ill.glare, ill.level, ill.regime.value,
                                                                vis_y=y))
        source = self.config.detector.input
        on_device = self.detector.accepts_tensors  # detection reads the device tensors: no host images for it
        with timer.stage("postprocess"):
            fused = _to_uint8(fused_t)
            ir_u8 = _to_uint8(ir_t) if keep_inputs or (source == "thermal" and not on_device) else None
            vis_u8 = None
            if keep_inputs or (source == "rgb" and not on_device):
                vis_u8 = vis if vis is not None and out_wh == rgb_wh else _to_uint8(vis_t)
        with timer.stage("detect"):
            if on_device:
                det_t = {"fused": fused_t, "rgb": vis_t}.get(source)
                detections = self.detector.detect_tensor(det_t if det_t is not None else ir_t.expand(-1, 3, -1, -1))
            else:
                if source == "fused":
                    det_img = fused
                elif source == "rgb":
                    det_img = vis_u8
                else:
                    assert ir_u8 is not None
                    det_img = np.repeat(ir_u8[:, :, None], 3, axis=2)
                detections = self.detector.detect(det_img)
        self.frames += 1
        return Result(
            stamp=stamp,
            fused=fused,
            detections=detections,
            variant=variant,
            regime=ill.regime.value,
            illumination=ill.level,
            glare_fraction=ill.glare_fraction,
            timings=dict(timer.ms),
            thermal=ir_u8 if keep_inputs else None,
            rgb=vis_u8 if keep_inputs else None,
        )


    @torch.inference_mode()
    def process_single(
        self,
        image: np.ndarray,
        modality: str,
        stamp: float = 0.0,
        *,
        encoding: str | None = None,
        rgb_size: tuple[int, int] | None = None,
    ) -> Result:
        """Detect on one camera alone, for when the other one is down (the node's degraded mode).

        Nothing is fused: ``Result.fused`` is the live camera's image in the output frame and the detector
        runs on it, whatever ``detector.input`` says.

        * ``modality="rgb"``: decoded and resized to the output size like in :meth:`process`; the
          illumination estimate runs as usual, so regime and glare stay tracked.
        * ``modality="thermal"``: normalised with the thermal stream's AGC, warped onto the output grid when
          ``rgb_size`` (the RGB camera's ``(width, height)``, e.g. from its last frame) is given, else kept in
          the thermal camera's own geometry; shown as gray RGB. Regime ``"unknown"``, illumination 0.

        Args:
            image: the live camera's image, as for :meth:`process`.
            modality: ``"rgb"`` or ``"thermal"``.
            stamp: time stamp, passed through.
            encoding: ROS encoding of ``image``; ``None`` = rgb8 for RGB, inferred from the dtype for thermal.
            rgb_size: output geometry for thermal-only frames (see above); ignored for RGB.

        Returns:
            a :class:`Result` with ``mode`` ``"rgb_only"`` or ``"thermal_only"`` and variant ``"none"``.

        Raises:
            InputError: the image cannot be decoded; ValueError: unknown ``modality``.
        """
        if modality not in ("rgb", "thermal"):
            raise ValueError(f"modality must be rgb or thermal, got {modality!r}")
        timer = self.timer
        timer.reset()
        level, regime, glare_fraction = 0.0, "unknown", 0.0
        if modality == "rgb":
            with timer.stage("preprocess"):
                vis, vis_t, rgb_wh, out_wh = self._rgb_tensor(image, encoding or "rgb8")
            with timer.stage("illumination"):
                ill = self.illumination(luma(vis_t))
                level, regime, glare_fraction = ill.level, ill.regime.value, ill.glare_fraction
            with timer.stage("postprocess"):
                shown = vis if vis is not None and out_wh == rgb_wh else _to_uint8(vis_t)
        else:
            with timer.stage("preprocess"):
                ir_t = self._thermal_tensor(image, encoding)
            with timer.stage("register"):
                if rgb_size is not None:
                    ir_t = self.registration.warp(ir_t, tuple(rgb_size))
            with timer.stage("postprocess"):
                ir_u8 = _to_uint8(ir_t)
                shown = np.ascontiguousarray(np.repeat(ir_u8[:, :, None], 3, axis=2))
        with timer.stage("detect"):
            detections = self.detector.detect(shown)
        self.frames += 1
        return Result(
            stamp=stamp,
            fused=shown,
            detections=detections,
            variant="none",
            regime=regime,
            illumination=level,
            glare_fraction=glare_fraction,
            timings=dict(timer.ms),
            mode=f"{modality}_only",
        )
