"""Turn a folder of thermal/visible image pairs into a rosbag2 that plays like two live cameras.

Pair ``i`` (pairs sorted by file name, see :func:`~ivfusion_ros.io.images.find_pairs`) is stamped
``start + i / rate`` seconds; with ``jitter`` each camera's header stamp moves independently by a uniform
offset in ``[-jitter, +jitter]`` (seeded), so a pair's stamps differ by up to ``2 * jitter`` - keep it
below ``sync.slop`` for every pair to be fused. Each message's bag (log) time equals its header stamp.

Thermal encodings:

* ``mono8``: 8-bit files as they are (16-bit files shifted down by 8 bits, float files min-max scaled);
* ``mono16``: a radiometric-like camera in centi-Kelvin: ``counts = 27315 + 20 * value`` for 8-bit
  files, i.e. gray level 0 is 273.15 K (0 degC) and each gray level 0.2 K, so 255 is 324.15 K (51 degC);
  16-bit files keep their counts. Like a real radiometric stream it spans about 5100 of 65536 counts,
  which is what the pipeline's AGC exists for.

``homography`` (row-major 3x3) warps the thermal image (``cv2.warpPerspective``, edges replicated) to
simulate a misaligned thermal camera; a pipeline whose ``registration.homography`` is its inverse
(:attr:`MakeBagSummary.registration_homography`) realigns it.

With ``compressed``, the topics become ``<topic>/compressed`` (``sensor_msgs/CompressedImage``, as
``image_transport`` names them): thermal as PNG (lossless, 16-bit capable), RGB as JPEG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ivfusion_ros.errors import ConfigError
from ivfusion_ros.io.bag import STORAGES, BagWriter, compressed_msg, image_msg
from ivfusion_ros.io.images import find_pairs, read_thermal, read_visible
from ivfusion_ros.io.rostypes import DISTROS

__all__ = [
    "MONO16_OFFSET",
    "MONO16_SCALE",
    "RGB_ENCODINGS",
    "THERMAL_ENCODINGS",
    "MakeBagOptions",
    "MakeBagSummary",
    "make_bag",
    "to_mono16",
]

THERMAL_ENCODINGS = ("mono8", "mono16")
RGB_ENCODINGS = ("rgb8", "bgr8")
#: mono16 counts of 8-bit gray level ``v``: ``MONO16_OFFSET + MONO16_SCALE * v`` (centi-Kelvin, 0.2 K per level).
MONO16_OFFSET = 27315
MONO16_SCALE = 20
_NS = 1_000_000_000


@dataclass(frozen=True)
class MakeBagOptions:
    """How ``make-bag`` writes the pairs (the CLI's options)."""

    rate: float = 10.0  # pairs per second
    thermal_topic: str = "/thermal/image_raw"
    rgb_topic: str = "/camera/image_raw"
    thermal_encoding: str = "mono8"
    rgb_encoding: str = "rgb8"
    thermal_frame_id: str = "thermal"
    rgb_frame_id: str = "camera"
    homography: tuple[float, ...] | None = None  # 9 numbers distorting the thermal image
    jitter: float = 0.0  # seconds, uniform +- per camera and frame
    seed: int = 0
    start: float = 1_700_000_000.0  # stamp of the first pair, seconds since the epoch
    storage: str = "mcap"
    compressed: bool = False
    jpeg_quality: int = 90
    distro: str = "jazzy"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"--rate: expected a positive number of pairs per second, got {self.rate}")
        if self.thermal_encoding not in THERMAL_ENCODINGS:
            raise ConfigError(f"--thermal-encoding: {self.thermal_encoding!r} is not one of "
                              f"{', '.join(THERMAL_ENCODINGS)}")
        if self.rgb_encoding not in RGB_ENCODINGS:
            raise ConfigError(f"--rgb-encoding: {self.rgb_encoding!r} is not one of {', '.join(RGB_ENCODINGS)}")
        if not (math.isfinite(self.jitter) and 0 <= self.jitter < 0.5 / self.rate):
            raise ConfigError(f"--jitter: expected 0 <= jitter < half the frame period ({0.5 / self.rate:g} s at "
                              f"--rate {self.rate:g}), got {self.jitter}")
        if not (math.isfinite(self.start) and self.start > 0):
            raise ConfigError(f"--start: expected a positive stamp in seconds, got {self.start}")
        for name in ("thermal_topic", "rgb_topic"):
            topic = getattr(self, name)
            if not topic.startswith("/") or topic.endswith("/"):
                raise ConfigError(f"--{name.replace('_', '-')}: expected an absolute topic name like "
                                  f"/thermal/image_raw, got {topic!r}")
        if self.distro not in DISTROS:
            raise ConfigError(f"--distro: {self.distro!r} is not one of {', '.join(DISTROS)}")
        if self.storage not in STORAGES:
            raise ConfigError(f"--format: {self.storage!r} is not one of {', '.join(STORAGES)}")
        if self.thermal_topic == self.rgb_topic:
            raise ConfigError(f"--thermal-topic and --rgb-topic are both {self.thermal_topic}")
        if self.homography is not None:
            h = self.homography
            if len(h) != 9 or not all(math.isfinite(v) for v in h):
                raise ConfigError(f"--homography: expected 9 finite numbers (row-major 3x3), got {list(h)}")
            if abs(np.linalg.det(np.asarray(h, np.float64).reshape(3, 3))) < 1e-12:
                raise ConfigError("--homography: the matrix is singular (not invertible)")

    @property
    def topics(self) -> tuple[str, str]:
        """The (thermal, RGB) topic names as written (``/compressed`` appended when compressed)."""
        suffix = "/compressed" if self.compressed else ""
        return self.thermal_topic + suffix, self.rgb_topic + suffix


@dataclass
class MakeBagSummary:
    """What ``make-bag`` wrote."""

    path: Path
    pairs: int
    topics: tuple[str, str]
    msgtype: str
    storage: str
    start_ns: int
    end_ns: int
    thermal_stamps_ns: list[int] = field(default_factory=list)
    rgb_stamps_ns: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    #: the ``registration.homography`` that undoes ``--homography`` (None without one)
    registration_homography: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "pairs": self.pairs, "topics": list(self.topics), "msgtype": self.msgtype,
            "storage": self.storage, "start_ns": self.start_ns, "end_ns": self.end_ns,
            "registration_homography": None if self.registration_homography is None
            else list(self.registration_homography),
        }


def to_mono16(thermal: np.ndarray) -> np.ndarray:
    """8-bit gray -> centi-Kelvin-like uint16 counts ``27315 + 20 * v`` (16-bit input is returned as is)."""
    if thermal.dtype == np.uint16:
        return thermal
    return (thermal.astype(np.uint16) * np.uint16(MONO16_SCALE) + np.uint16(MONO16_OFFSET)).astype(np.uint16)


def _to_mono8(thermal: np.ndarray) -> np.ndarray:
    if thermal.dtype == np.uint8:
        return thermal
    if thermal.dtype == np.uint16:
        return (thermal >> 8).astype(np.uint8)
    finite = thermal[np.isfinite(thermal)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (np.nan_to_num(thermal, nan=lo) - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _thermal_image(path: Path, opts: MakeBagOptions, h: np.ndarray | None) -> np.ndarray:
    img = read_thermal(path)
    if img.dtype == np.float32:
        img = _to_mono8(img)
    img = to_mono16(img) if opts.thermal_encoding == "mono16" else _to_mono8(img)
    if h is not None:
        img = cv2.warpPerspective(img, h, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    return img


def _stamps(n: int, opts: MakeBagOptions) -> tuple[list[int], list[int]]:
    start_ns = round(opts.start * _NS)
    nominal = [start_ns + round(i * _NS / opts.rate) for i in range(n)]
    if opts.jitter <= 0:
        return nominal, list(nominal)
    rng = np.random.default_rng(opts.seed)
    offsets = np.rint(rng.uniform(-opts.jitter, opts.jitter, size=(n, 2)) * _NS).astype(np.int64)
    return ([t + int(o) for t, o in zip(nominal, offsets[:, 0])],
            [t + int(o) for t, o in zip(nominal, offsets[:, 1])])


def make_bag(ir: str | Path, vis: str | Path, out: str | Path, opts: MakeBagOptions | None = None,
             progress: Callable[[int, int], None] | None = None) -> MakeBagSummary:
    """Write the image pairs of ``ir``/``vis`` (folders paired by file name, or two files) into a bag.

    Args:
        ir, vis: thermal and visible folders (or files).
        out: output bag (``*.mcap`` = one MCAP file, else a rosbag2 folder).
        opts: options (defaults: 10 Hz, mono8 + rgb8 raw images, mcap).
        progress: called as ``progress(done, total)`` after every pair.

    Raises:
        InputError: missing folders, no common names, unreadable images.
        ConfigError: bad options.
        BagError: the output exists or cannot be written.
    """
    opts = opts or MakeBagOptions()
    pairs = find_pairs(ir, vis)
    h = None if opts.homography is None else np.asarray(opts.homography, np.float64).reshape(3, 3)
    thermal_ns, rgb_ns = _stamps(len(pairs), opts)
    th_topic, rgb_topic = opts.topics
    with BagWriter(out, storage=opts.storage, distro=opts.distro, overwrite=opts.overwrite) as bag:
        store = bag.store
        for i, pair in enumerate(pairs):
            thermal = _thermal_image(pair.ir, opts, h)
            rgb = read_visible(pair.vis)
            if opts.rgb_encoding == "bgr8":
                rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            if opts.compressed:
                th_msg = compressed_msg(store, thermal, opts.thermal_encoding, thermal_ns[i], opts.thermal_frame_id,
                                        codec="png")
                rgb_msg = compressed_msg(store, rgb, opts.rgb_encoding, rgb_ns[i], opts.rgb_frame_id, codec="jpeg",
                                         jpeg_quality=opts.jpeg_quality)
            else:
                th_msg = image_msg(store, thermal, opts.thermal_encoding, thermal_ns[i], opts.thermal_frame_id)
                rgb_msg = image_msg(store, rgb, opts.rgb_encoding, rgb_ns[i], opts.rgb_frame_id)
            # in log-time order (jitter < half a period keeps frames from overtaking each other)
            writes: Sequence[tuple[int, str, object]] = sorted(
                [(thermal_ns[i], th_topic, th_msg), (rgb_ns[i], rgb_topic, rgb_msg)], key=lambda w: w[0])
            for stamp, topic, msg in writes:
                bag.write(topic, msg, stamp)
            if progress is not None:
                progress(i + 1, len(pairs))
    stamps = thermal_ns + rgb_ns
    inverse = None
    if h is not None:
        inv = np.linalg.inv(h)
        if abs(inv[2, 2]) > 1e-12:
            inv = inv / inv[2, 2]
        inverse = tuple(float(v) for v in inv.reshape(-1))
    return MakeBagSummary(
        path=Path(out), pairs=len(pairs), topics=(th_topic, rgb_topic),
        msgtype="sensor_msgs/msg/CompressedImage" if opts.compressed else "sensor_msgs/msg/Image",
        storage=opts.storage, start_ns=min(stamps), end_ns=max(stamps), thermal_stamps_ns=thermal_ns,
        rgb_stamps_ns=rgb_ns, names=[p.name for p in pairs], registration_homography=inverse)
