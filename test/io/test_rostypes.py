"""Message types of the bag tools: the same type hashes as the real ROS 2 packages, one FusionStatus.msg."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from ivfusion_ros.io import rostypes
from ivfusion_ros.io.rostypes import FUSION_STATUS, VISION_MSGS, fusion_status_msg_path, typestore

REPO = Path(__file__).resolve().parents[2]

# RIHS01 hashes that rosidl computed for the real packages (vision_msgs 4.1.1 and this package, built on Jazzy):
# equal hashes mean equal field layouts, so ROS 2 tools accept the bags' connections as these types.
REAL_HASHES = {
    "vision_msgs/msg/Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    FUSION_STATUS: "RIHS01_bd9905c197920aeb969a71de5e7a23d88aa57c610a1ce65fe9126509e3bdaa00",
    "sensor_msgs/msg/Image": "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
}


@pytest.mark.parametrize("distro", ["jazzy", "humble"])
def test_type_hashes_match_the_real_packages(distro: str) -> None:
    store = typestore(distro)
    for name, digest in REAL_HASHES.items():
        assert store.hash_rihs01(name) == digest, name


def test_humble_and_jazzy_layouts_agree() -> None:
    jazzy, humble = typestore("jazzy"), typestore("humble")
    names = [*VISION_MSGS, FUSION_STATUS, "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
             "std_msgs/msg/Header", "builtin_interfaces/msg/Time", "geometry_msgs/msg/PoseWithCovariance"]
    for name in names:
        assert jazzy.fielddefs[name] == humble.fielddefs[name], name


def test_message_definition_carries_dependencies() -> None:
    text, _ = typestore().generate_msgdef("vision_msgs/msg/Detection2DArray", ros_version=2)
    for dep in ("MSG: vision_msgs/Detection2D", "MSG: vision_msgs/BoundingBox2D", "MSG: geometry_msgs/Pose",
                "MSG: builtin_interfaces/Time"):
        assert dep in text


def test_fusion_status_comes_from_the_one_msg_file() -> None:
    assert fusion_status_msg_path() == REPO / "msg" / "FusionStatus.msg"
    fields = typestore().fielddefs[FUSION_STATUS][1]
    names = [f[0] for f in fields]
    msg_names = [line.split()[1] for line in (REPO / "msg" / "FusionStatus.msg").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    assert names == msg_names


def test_pip_ships_the_msg_file_where_the_loader_looks() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    data_files = cfg["options.data_files"]["share/ivfusion_ros/msg"].split()
    assert data_files == ["msg/FusionStatus.msg"]
    candidates = [str(p) for p in rostypes._candidates()]
    assert any(c.endswith("share/ivfusion_ros/msg/FusionStatus.msg") for c in candidates)


def test_missing_msg_file_and_unknown_distro(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rostypes, "_candidates", lambda: [Path("/nonexistent/FusionStatus.msg")])
    with pytest.raises(rostypes.MessageDefinitionError, match="cannot find msg/FusionStatus.msg.*nonexistent"):
        fusion_status_msg_path()
    with pytest.raises(rostypes.MessageDefinitionError, match="unknown ROS distro 'noetic'"):
        typestore("noetic")
