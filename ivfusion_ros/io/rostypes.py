"""ROS 2 message types for the bag tools, without a ROS install: a ``rosbags`` typestore per distro.

The stock typestores of ``rosbags`` (Humble, Jazzy) know ``sensor_msgs``, ``std_msgs`` and
``geometry_msgs``; this module adds the two families the node publishes that they lack:

* ``vision_msgs`` 4.x (the version Humble and Jazzy ship): ``Detection2DArray`` and the types it uses,
  registered from their ``.msg`` definitions (comments dropped; the RIHS01 type hashes equal those of the
  real packages, which the tests pin);
* ``ivfusion_ros/msg/FusionStatus``, read from the package's own ``msg/FusionStatus.msg`` - the same file
  rosidl generates the node's message from, so the offline tools cannot drift from the node.

Where ``msg/FusionStatus.msg`` is found (:func:`fusion_status_msg_path`), in order:

1. the source tree (a checkout, or ``pip install -e``): ``<repo>/msg/FusionStatus.msg``;
2. a pip install: ``setup.cfg`` ships the file as ``data_files`` into ``<prefix>/share/ivfusion_ros/msg``
   (``sys.prefix`` for a venv or system install, the user base for ``--user``);
3. a colcon/ament install: rosidl installs it into ``share/ivfusion_ros/msg`` of a prefix on
   ``AMENT_PREFIX_PATH``.

The message layouts of every type used here are identical in Humble and Jazzy (checked by the tests), so
bags written with either typestore decode with the other; the distro only changes what the bag metadata
names.
"""

from __future__ import annotations

import functools
import os
import site
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ivfusion_ros.errors import IvfusionError

__all__ = [
    "DISTROS",
    "FUSION_STATUS",
    "VISION_MSGS",
    "fusion_status_msg_path",
    "typestore",
]

#: ROS 2 distributions the bag tools write for: name -> rosbags typestore.
DISTROS: dict[str, Stores] = {"jazzy": Stores.ROS2_JAZZY, "humble": Stores.ROS2_HUMBLE}

FUSION_STATUS = "ivfusion_ros/msg/FusionStatus"

#: vision_msgs 4.x definitions (fields of the upstream .msg files, comments dropped).
VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
}


class MessageDefinitionError(IvfusionError):
    """A message definition the bag tools need cannot be found or parsed."""


def _candidates() -> list[Path]:
    rel = Path("share") / "ivfusion_ros" / "msg" / "FusionStatus.msg"
    out = [Path(__file__).resolve().parents[2] / "msg" / "FusionStatus.msg"]
    prefixes = [sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or ""]
    prefixes += [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)]
    out += [Path(p) / rel for p in dict.fromkeys(prefixes) if p]
    return out


def fusion_status_msg_path() -> Path:
    """Where ``FusionStatus.msg`` is (see the module doc for the search order).

    Raises:
        MessageDefinitionError: not found; the message lists the places searched.
    """
    candidates = _candidates()
    for path in candidates:
        if path.is_file():
            return path
    raise MessageDefinitionError(
        "cannot find msg/FusionStatus.msg (the status message definition); searched: "
        + ", ".join(str(p) for p in candidates)
        + ". Reinstall ivfusion_ros (pip installs it into <prefix>/share/ivfusion_ros/msg)."
    )


@functools.cache
def typestore(distro: str = "jazzy") -> Typestore:
    """The distro's stock typestore plus vision_msgs 4.x and ``ivfusion_ros/msg/FusionStatus`` (cached).

    Raises:
        MessageDefinitionError: unknown distro, or the status message cannot be found or parsed.
    """
    if distro not in DISTROS:
        raise MessageDefinitionError(f"unknown ROS distro {distro!r} (supported: {', '.join(DISTROS)})")
    store = get_typestore(DISTROS[distro])
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    path = fusion_status_msg_path()
    try:
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), FUSION_STATUS))
    except Exception as err:  # rosbags raises its own parser errors; name the file
        raise MessageDefinitionError(f"cannot parse {path}: {err}") from None
    store.register(types)
    return store
