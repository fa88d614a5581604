"""Reading and writing ROS bags with ``rosbags`` (pure Python, no ROS install).

Reading (:class:`BagReader`): rosbag2 folders (mcap or sqlite3 storage), bare ``.mcap``/``.db3`` files and
ROS 1 ``.bag`` files, through ``rosbags``' ``AnyReader``. Message types come from the definitions stored in
the bag; bags without them (sqlite3 bags recorded by Humble) use the typestore of ``distro``. Image topics
(``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``) yield :class:`BagMessage` records whose
``stamp_ns`` is the header stamp (the bag's log time when the header stamp is zero) - the stamp the node
pairs on. :func:`image_from_msg` turns one into a numpy image:

* ``Image``: ``rosbags-image`` (``image_to_cvimage``) does the pixel view and the byte swap of big-endian
  ``mono16``/``32FC1`` data; rows padded beyond ``width * pixel size`` (``step``) are unpadded first, and
  malformed messages raise :class:`~ivfusion_ros.errors.InputError` with the node's drop reasons
  (``bad_encoding``, ``empty``, ``size_mismatch``);
* ``CompressedImage``: OpenCV decodes with ``IMREAD_UNCHANGED`` so 16-bit PNG thermal stays 16-bit
  (``rosbags-image`` decodes with ``IMREAD_ANYCOLOR``, which reduces it to 8 bit).

Writing (:class:`BagWriter`): rosbag2 in mcap (default) or sqlite3 storage, metadata version 8 (the newest
that Humble's rosbag2 and Jazzy's both read: version 9 changed the QoS layout). Every connection carries
the full message definition (``ros2msg`` text with its dependencies) and the RIHS01 type hash, so
``ros2 bag play``, Foxglove and ``rosbags`` decode the custom types (``vision_msgs``, ``FusionStatus``)
without the packages. An output path ending in ``.mcap`` becomes a single self-contained MCAP file (the
rosbag2 metadata is also stored inside it); any other path becomes a rosbag2 folder.

Every failure of the bag itself (missing, corrupt, unknown storage, topics absent) is a :class:`BagError`
naming the bag; a bad *message* is an :class:`InputError` with a drop reason, so a replay counts it and
goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.image import image_to_cvimage
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from ivfusion_ros.core.frames import CANONICAL_ENCODINGS, IMAGE_ENCODINGS
from ivfusion_ros.errors import InputError, IvfusionError
from ivfusion_ros.io.rostypes import DISTROS, FUSION_STATUS, typestore
from ivfusion_ros.ros.conversions import compressed_msg_to_array, image_layout

__all__ = [
    "COMPRESSED_IMAGE",
    "DETECTION_ARRAY",
    "IMAGE",
    "IMAGE_ENCODINGS",
    "IMAGE_TYPES",
    "STORAGES",
    "BagError",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "TopicInfo",
    "compressed_msg",
    "detections_msg",
    "header",
    "image_from_msg",
    "image_msg",
    "ns_to_sec",
    "status_msg",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
DETECTION_ARRAY = "vision_msgs/msg/Detection2DArray"

#: Storage formats of written bags.
STORAGES = ("mcap", "sqlite3")
_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: rosbag2 metadata version written (8: read by Humble and Jazzy alike).
BAG_VERSION = 8

_NS = 1_000_000_000


class BagError(IvfusionError):
    """A bag cannot be opened, read or written, or lacks the topics asked for."""


def ns_to_sec(ns: int) -> float:
    """Integer nanoseconds -> float seconds."""
    return ns / _NS


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag."""

    name: str
    msgtype: str
    count: int


@dataclass
class BagMessage:
    """One message of an image topic, deserialized.

    Attributes:
        topic, msgtype: where it was recorded and its type (``sensor_msgs/msg/Image`` or ``CompressedImage``).
        log_ns: the bag's receive time stamp, nanoseconds.
        stamp_ns: header stamp in nanoseconds, or ``log_ns`` when the header stamp is zero.
        stamp_source: ``"header"`` or ``"log_time"``.
        frame_id: header frame id.
        msg: the ``rosbags`` message, ``None`` when it could not be deserialized (``error`` says why).
        raw: the serialized message as stored (for copying it into another bag).
    """

    topic: str
    msgtype: str
    log_ns: int
    stamp_ns: int
    stamp_source: str
    frame_id: str
    msg: Any
    raw: bytes | memoryview
    error: str = ""

    def decode(self) -> tuple[np.ndarray, str]:
        """The image and its encoding (:func:`image_from_msg`); ``InputError`` with a drop reason."""
        if self.msg is None:
            raise InputError(f"{self.topic}: undecodable message: {self.error}", reason="bad_message")
        try:
            return image_from_msg(self.msg)
        except InputError as err:
            raise InputError(f"{self.topic}: {err}", reason=err.reason) from None


def _describe_topics(topics: Mapping[str, TopicInfo]) -> str:
    if not topics:
        return "it has no topics"
    return "it has: " + ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in topics.values())


class BagReader:
    """Read image topics from a rosbag2 (folder, ``.mcap``, ``.db3``) or a ROS 1 ``.bag``.

    Use as a context manager::

        with BagReader("drive_01") as bag:
            topic = bag.image_topic("/thermal/image_raw")
            for m in bag.messages([topic]):
                img, encoding = m.decode()

    Args:
        path: the bag.
        distro: typestore (``"jazzy"`` or ``"humble"``) for bags that do not store message definitions.

    Raises:
        BagError: missing path, not a bag, corrupt or unreadable bag (the message names it).
    """

    def __init__(self, path: str | Path, *, distro: str = "jazzy") -> None:
        self.path = Path(path)
        self.distro = distro
        self._reader: AnyReader | None = None
        self.topics: dict[str, TopicInfo] = {}

    def open(self) -> BagReader:
        path = self.path
        if not path.exists():
            raise BagError(f"no such bag: {path}")
        if path.is_dir() and not (path / "metadata.yaml").is_file():
            raise BagError(f"{path} is not a rosbag2 folder (no metadata.yaml); pass the folder `ros2 bag record` "
                           "made, or a .mcap, .db3 or .bag file")
        if path.is_file() and path.suffix not in (".mcap", ".db3", ".bag"):
            raise BagError(f"{path}: unknown bag format {path.suffix!r} (expected a rosbag2 folder, .mcap, .db3 "
                           "or a ROS 1 .bag)")
        try:
            reader = AnyReader([path], default_typestore=typestore(self.distro))
            reader.open()
        except IvfusionError:
            raise
        except Exception as err:  # rosbags, sqlite, mcap parsing and OS errors alike: a bad bag
            raise BagError(f"cannot read bag {path}: {err or type(err).__name__}") from None
        self._reader = reader
        self.topics = {
            name: TopicInfo(name, info.msgtype or "(mixed types)", info.msgcount)
            for name, info in sorted(reader.topics.items())
        }
        return self

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reader(self) -> AnyReader:
        if self._reader is None:
            raise BagError(f"bag {self.path} is not open")
        return self._reader

    @property
    def storage(self) -> str:
        """``mcap``, ``sqlite3`` or ``rosbag1``."""
        suffix = self.path.suffix
        if suffix in (".bag", ".mcap", ".db3"):
            return {".bag": "rosbag1", ".mcap": "mcap", ".db3": "sqlite3"}[suffix]
        try:  # a folder: metadata.yaml names its storage plugin (it was parsed once already by open())
            meta = yaml.safe_load((self.path / "metadata.yaml").read_text(encoding="utf-8"))
            return str(meta["rosbag2_bagfile_information"]["storage_identifier"])
        except Exception as err:
            raise BagError(f"cannot read {self.path / 'metadata.yaml'}: {err}") from None

    @property
    def start_ns(self) -> int:
        return int(self.reader.start_time)

    @property
    def duration_ns(self) -> int:
        return max(0, int(self.reader.duration) - 1) if self.reader.message_count else 0

    def image_topic(self, topic: str, role: str = "image") -> str:
        """Resolve an image topic: ``topic`` itself, else ``topic + "/compressed"`` (image_transport's name).

        Raises:
            BagError: neither exists, or it is not an image type; the message lists the bag's topics.
        """
        for name in (topic, topic.rstrip("/") + "/compressed"):
            info = self.topics.get(name)
            if info is None:
                continue
            if info.msgtype not in IMAGE_TYPES:
                raise BagError(f"{role} topic {name} in {self.path} is {info.msgtype}, not sensor_msgs/msg/Image "
                               f"or CompressedImage; {_describe_topics(self.topics)}")
            return name
        raise BagError(f"bag {self.path} has no {role} topic {topic} (nor {topic.rstrip('/')}/compressed); "
                       f"{_describe_topics(self.topics)}")

    def count(self, topics: Iterable[str]) -> int:
        """Messages on ``topics`` according to the bag's index."""
        return sum(self.topics[t].count for t in topics if t in self.topics)

    def messages(self, topics: Sequence[str]) -> Iterator[BagMessage]:
        """Messages of ``topics`` in the bag's order (log time), deserialized.

        A message that cannot be deserialized is yielded with ``msg=None`` and ``error`` set (its stamp is
        its log time); an unreadable bag raises :class:`BagError`.
        """
        reader = self.reader
        conns = [c for c in reader.connections if c.topic in set(topics)]
        if not conns:
            return
        try:
            for conn, log_ns, raw in reader.messages(connections=conns):
                yield self._record(reader, conn.topic, conn.msgtype, int(log_ns), raw)
        except (IvfusionError, GeneratorExit):
            raise
        except Exception as err:
            raise BagError(f"cannot read bag {self.path}: {err or type(err).__name__}") from None

    @staticmethod
    def _record(reader: AnyReader, topic: str, msgtype: str, log_ns: int, raw: bytes) -> BagMessage:
        try:
            msg = reader.deserialize(raw, msgtype)
            stamp = msg.header.stamp
            stamp_ns = int(stamp.sec) * _NS + int(stamp.nanosec)
            frame_id = str(msg.header.frame_id)
        except Exception as err:  # a corrupt or truncated message: counted as a drop, not fatal
            return BagMessage(topic, msgtype, log_ns, log_ns, "log_time", "", None, raw,
                              error=str(err) or type(err).__name__)
        if stamp_ns == 0:
            return BagMessage(topic, msgtype, log_ns, log_ns, "log_time", frame_id, msg, raw)
        return BagMessage(topic, msgtype, log_ns, stamp_ns, "header", frame_id, msg, raw)


def image_from_msg(msg: Any) -> tuple[np.ndarray, str]:
    """A ``sensor_msgs/Image`` or ``CompressedImage`` (``rosbags`` message) -> ``(image, encoding)``.

    The checks and the compressed decoding are the node's (:mod:`ivfusion_ros.ros.conversions`), so a bag
    drops exactly the messages the node would; raw pixels are converted by ``rosbags-image``.

    Returns:
        native-endian ``(H, W)`` or ``(H, W, C)`` array and its encoding (``8UC1``/``16UC1`` given as
        ``mono8``/``mono16``; compressed images as ``mono8``, ``mono16``, ``bgr8`` or ``bgra8``). The array
        owns its (writable) pixels.

    Raises:
        InputError: reason ``bad_encoding`` (unsupported encoding or compressed format), ``empty``,
            ``size_mismatch`` (``data`` is not ``step * height`` bytes or ``step`` is shorter than a row),
            ``decode_failed`` (compressed data OpenCV cannot decode).
    """
    if hasattr(msg, "format"):
        return compressed_msg_to_array(msg)
    lay = image_layout(msg)
    if lay.step != lay.row:  # padded rows: keep the pixels only (rosbags-image assumes step == row)
        buf = np.ascontiguousarray(lay.data.reshape(lay.height, lay.step)[:, : lay.row]).reshape(-1)
        msg = dataclasses.replace(msg, data=buf, step=lay.row)
    img = np.asarray(image_to_cvimage(msg))  # views the pixels and byte-swaps foreign-endian data
    if img.dtype != lay.dtype:  # defensive: the encoding table and rosbags-image agree on every entry above
        img = img.astype(lay.dtype)
    elif not img.flags.writeable:  # a view of the message bytes: torch.from_numpy warns on read-only arrays
        img = img.copy()
    return img, CANONICAL_ENCODINGS.get(lay.encoding, lay.encoding)


# ------------------------------------------------------------------------------------------ message makers
def header(store: Typestore, stamp_ns: int, frame_id: str = "") -> Any:
    """``std_msgs/Header`` with ``stamp_ns`` split into ``sec``/``nanosec``."""
    Time = store.types["builtin_interfaces/msg/Time"]
    Header = store.types["std_msgs/msg/Header"]
    sec, nsec = divmod(int(stamp_ns), _NS)
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)


def image_msg(store: Typestore, img: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "") -> Any:
    """A ``sensor_msgs/Image`` holding ``img`` (unpadded rows, little-endian).

    Raises:
        InputError: ``img`` does not match ``encoding`` (reason ``bad_encoding``).
    """
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(f"unsupported image encoding {encoding!r}", reason="bad_encoding")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    got = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype != dtype or got != channels or img.ndim not in (2, 3):
        raise InputError(f"{encoding} needs {dtype} x{channels}, got {img.dtype} {img.shape}", reason="bad_encoding")
    h, w = img.shape[:2]
    data = np.ascontiguousarray(img, dtype=dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
    Image = store.types[IMAGE]
    return Image(header=header(store, stamp_ns, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0,
                 step=w * channels * dtype.itemsize, data=data)


def compressed_msg(store: Typestore, img: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "",
                   codec: str = "png", jpeg_quality: int = 90) -> Any:
    """A ``sensor_msgs/CompressedImage`` as ``compressed_image_transport`` writes it.

    ``format`` is ``"<encoding>; <codec> compressed <encoding of the data>"``; colour images are stored
    BGR, 16-bit images only as PNG.

    Raises:
        InputError: unsupported encoding, 16-bit JPEG, or OpenCV cannot encode.
    """
    if codec not in ("png", "jpeg"):
        raise InputError(f"unsupported compression {codec!r} (png or jpeg)", reason="bad_encoding")
    if encoding in ("rgb8", "rgba8"):
        data_img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if encoding == "rgb8" else cv2.COLOR_RGBA2BGRA)
        stored = "bgr8" if encoding == "rgb8" else "bgra8"
    elif encoding in ("bgr8", "bgra8", "mono8", "mono16"):
        data_img, stored = img, encoding
    else:
        raise InputError(f"cannot compress {encoding!r} images (mono8, mono16, rgb8, bgr8, rgba8, bgra8)",
                         reason="bad_encoding")
    if codec == "jpeg" and data_img.dtype != np.uint8:
        raise InputError("JPEG holds 8-bit images only: compress mono16 as png", reason="bad_encoding")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", data_img, params)
    if not ok:
        raise InputError(f"OpenCV could not encode a {encoding} image as {codec}", reason="encode_failed")
    Compressed = store.types[COMPRESSED_IMAGE]
    return Compressed(header=header(store, stamp_ns, frame_id), format=f"{encoding}; {codec} compressed {stored}",
                      data=np.asarray(buf, np.uint8).reshape(-1))


def detections_msg(store: Typestore, boxes: np.ndarray, scores: np.ndarray, class_ids: Sequence[str],
                   stamp_ns: int, frame_id: str = "") -> Any:
    """A ``vision_msgs/Detection2DArray`` (vision_msgs 4.x) from ``x1, y1, x2, y2`` pixel boxes.

    Each detection: ``bbox.center.position`` = box centre, ``bbox.size_x/size_y`` = width/height,
    ``theta`` = 0, one hypothesis with ``class_id`` and ``score`` (its pose zero, identity orientation),
    ``id`` = the detection's index; every header equals the array's.
    """
    t = store.types
    hdr = header(store, stamp_ns, frame_id)
    pose = t["geometry_msgs/msg/PoseWithCovariance"]
    out = []
    for k, (box, score, cid) in enumerate(zip(np.asarray(boxes, np.float64).reshape(-1, 4).tolist(),
                                              np.asarray(scores, np.float64).tolist(), class_ids)):
        x1, y1, x2, y2 = box
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(cid), score=float(score)),
            pose=pose(pose=t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
                covariance=np.zeros(36, np.float64)))
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2.0,
                                                                                      y=(y1 + y2) / 2.0),
                                               theta=0.0),
            size_x=x2 - x1, size_y=y2 - y1)
        out.append(t["vision_msgs/msg/Detection2D"](header=hdr, results=[hyp], bbox=bbox, id=str(k)))
    return t[DETECTION_ARRAY](header=hdr, detections=out)


def status_msg(store: Typestore, fields: Mapping[str, Any], stamp_ns: int, frame_id: str = "") -> Any:
    """An ``ivfusion_ros/msg/FusionStatus`` from its field values (all but ``header``).

    Raises:
        BagError: a field is missing or unknown (the message definition and the caller disagree).
    """
    cls = store.types[FUSION_STATUS]
    names = [f.name for f in dataclasses.fields(cls) if f.name != "header" and not f.name.startswith("__")]
    missing, extra = set(names) - set(fields), set(fields) - set(names)
    if missing or extra:
        raise BagError(f"FusionStatus fields do not match msg/FusionStatus.msg: missing {sorted(missing)}, "
                       f"unknown {sorted(extra)}")
    values = dict(fields)
    for key, dtype in (("stage_latency_ms", np.float32), ("drop_counts", np.uint64)):
        values[key] = np.asarray(values[key], dtype)
    return cls(header=header(store, stamp_ns, frame_id), **values)


# ------------------------------------------------------------------------------------------------ writing
class BagWriter:
    """Write a rosbag2 (mcap or sqlite3) that ``ros2 bag play``, RViz, Foxglove and ``rosbags`` open.

    Args:
        path: output; ``*.mcap`` gives one MCAP file, anything else a rosbag2 folder.
        storage: ``"mcap"`` or ``"sqlite3"``; ``None`` = mcap (sqlite3 bags are folders only).
        distro: typestore (and so message definitions) to write with: ``"jazzy"`` or ``"humble"``.
        overwrite: replace an existing output instead of failing.

    Use as a context manager; on an exception the partial output is removed.

    Raises:
        BagError: the output exists (without ``overwrite``), a storage/path mismatch, or a write error.
    """

    def __init__(self, path: str | Path, *, storage: str | None = None, distro: str = "jazzy",
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        storage = storage or "mcap"
        if storage not in STORAGES:
            raise BagError(f"unknown bag storage {storage!r} (supported: {', '.join(STORAGES)})")
        if distro not in DISTROS:
            raise BagError(f"unknown ROS distro {distro!r} (supported: {', '.join(DISTROS)})")
        self.single_file = self.path.suffix == ".mcap"
        if self.path.suffix == ".mcap" and storage != "mcap":
            raise BagError(f"{self.path}: a .mcap path holds mcap storage, not {storage}")
        if self.path.suffix in (".db3", ".bag"):
            raise BagError(f"{self.path}: write sqlite3 bags as a folder (a path without .db3), "
                           "or an .mcap file")
        self.storage = storage
        self.distro = distro
        self.overwrite = overwrite
        self.store = typestore(distro)
        self._writer: Writer | None = None
        self._tmp: Path | None = None
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def open(self) -> BagWriter:
        path = self.path
        if path.exists():
            if not self.overwrite:
                raise BagError(f"output {path} exists already (remove it or pass --overwrite)")
            if not path.is_dir() or (path / "metadata.yaml").is_file():
                _remove(path)
            else:
                raise BagError(f"refusing to overwrite {path}: a folder that is not a rosbag2")
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.single_file:  # write a folder next to the target, then keep its one .mcap file
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
            target = self._tmp / path.stem
        else:
            target = path
        try:
            writer = Writer(target, version=BAG_VERSION, storage_plugin=_PLUGINS[self.storage])
            writer.open()
        except Exception as err:
            self._cleanup()
            raise BagError(f"cannot create bag {path}: {err}") from None
        self._writer = writer
        return self

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic (once) with the full definition of ``msgtype`` from the typestore."""
        if topic in self._conns:
            return
        if self._writer is None:
            raise BagError(f"bag {self.path} is not open")
        if msgtype not in self.store.types:
            raise BagError(f"cannot write {topic}: message type {msgtype} is unknown to the {self.distro} typestore")
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self.counts[topic] = 0

    def write(self, topic: str, msg: Any, log_ns: int) -> None:
        """Serialize ``msg`` (a message of this writer's typestore) onto ``topic`` at ``log_ns``."""
        self.add_topic(topic, msg.__msgtype__)
        raw = self.store.serialize_cdr(msg, msg.__msgtype__)
        self.write_raw(topic, raw, log_ns)

    def write_raw(self, topic: str, raw: bytes | memoryview, log_ns: int, msgtype: str | None = None) -> None:
        """Store an already serialized (CDR) message; ``msgtype`` declares the topic if needed."""
        if topic not in self._conns:
            if msgtype is None:
                raise BagError(f"topic {topic} was not declared in {self.path}")
            self.add_topic(topic, msgtype)
        assert self._writer is not None
        try:
            self._writer.write(self._conns[topic], int(log_ns), raw)
        except Exception as err:
            raise BagError(f"cannot write to bag {self.path}: {err}") from None
        self.counts[topic] += 1

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
        except Exception as err:
            self._cleanup()
            raise BagError(f"cannot finish bag {self.path}: {err}") from None
        if self._tmp is not None:
            files = list(self._tmp.rglob("*.mcap"))
            if len(files) != 1:
                self._cleanup()
                raise BagError(f"cannot finish bag {self.path}: expected one mcap file, got {files}")
            files[0].replace(self.path)
            self._cleanup()

    def abort(self) -> None:
        """Drop the partial output."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.abort()
        self._cleanup()
        if not self.single_file and self.path.exists():
            _remove(self.path)

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
