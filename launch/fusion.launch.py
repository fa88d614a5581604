"""Launch the ivfusion_ros fusion node.

    ros2 launch ivfusion_ros fusion.launch.py thermal_topic:=/flir/image_raw rgb_topic:=/camera/image_raw
    ros2 launch ivfusion_ros fusion.launch.py \
        params_file:=$(ros2 pkg prefix ivfusion_ros)/share/ivfusion_ros/config/night_glare.yaml
    ros2 launch ivfusion_ros fusion.launch.py variant:=max detector:=none namespace:=front

The node subscribes to the relative topics ``thermal/image`` and ``rgb/image`` (``.../compressed`` with
``compressed:=true``); this file remaps them to ``thermal_topic`` and ``rgb_topic`` (and
``<topic>/compressed``). Outputs are relative to the namespace: ``fused/image``, ``detections``, ``status``,
``debug/image`` and ``/diagnostics``.

Parameters come from ``params_file`` (default: the installed ``config/fusion.yaml``); the arguments
``variant``, ``device``, ``detector``, ``model`` and ``compressed`` override it when not empty.
"""

from __future__ import annotations

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

#: launch argument -> (node parameter, converter) for the overrides applied after the parameter file
OVERRIDES = {
    "variant": ("fusion.variant", str),
    "device": ("runtime.device", str),
    "detector": ("detector.type", str),
    "model": ("detector.model", str),
    "compressed": ("node.compressed", lambda v: v.strip().lower() in ("true", "1", "yes", "on")),
}


def _default_params_file() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return str(Path(get_package_share_directory("ivfusion_ros")) / "config" / "fusion.yaml")
    except Exception:  # package not installed: the file next to this launch file (source checkout)
        return str(Path(__file__).resolve().parents[1] / "config" / "fusion.yaml")


def _node(context, *args, **kwargs):
    arg = {name: LaunchConfiguration(name).perform(context) for name in (
        "thermal_topic", "rgb_topic", "params_file", "namespace", "use_sim_time", "log_level", *OVERRIDES)}
    overrides = {"use_sim_time": arg["use_sim_time"].strip().lower() in ("true", "1", "yes", "on")}
    for name, (param, convert) in OVERRIDES.items():
        if arg[name].strip():
            overrides[param] = convert(arg[name].strip())
    remaps = []
    for cam, topic in (("thermal", arg["thermal_topic"]), ("rgb", arg["rgb_topic"])):
        remaps += [(f"{cam}/image", topic), (f"{cam}/image/compressed", f"{topic}/compressed")]
    return [Node(
        package="ivfusion_ros",
        executable="fusion_node",
        name="ivfusion_node",
        namespace=arg["namespace"],
        parameters=[arg["params_file"], overrides],
        remappings=remaps,
        arguments=["--ros-args", "--log-level", arg["log_level"]],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("thermal_topic", default_value="/thermal/image_raw",
                              description="Thermal camera topic (sensor_msgs/Image: mono8, mono16 or 32FC1)."),
        DeclareLaunchArgument("rgb_topic", default_value="/camera/image_raw",
                              description="RGB camera topic (sensor_msgs/Image: rgb8, bgr8, ...)."),
        DeclareLaunchArgument("params_file", default_value=_default_params_file(),
                              description="ROS 2 parameter file (node key /**/ivfusion_node or ivfusion_node)."),
        DeclareLaunchArgument("variant", default_value="",
                              description="Fusion variant, e.g. adaptive, average, max ('' = from params_file)."),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics."),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)."),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu or cuda ('' = from params_file)."),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error."),
        DeclareLaunchArgument("compressed", default_value="",
                              description="true: subscribe to <topic>/compressed ('' = from params_file)."),
        DeclareLaunchArgument("detector", default_value="",
                              description="Detector: ivdet, hog, yolo or none ('' = from params_file)."),
        DeclareLaunchArgument("model", default_value="",
                              description="Model file for detector ivdet or yolo ('' = from params_file)."),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_node)])
