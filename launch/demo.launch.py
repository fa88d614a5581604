"""The fusion node on the synthetic night street: no cameras or bags needed.

    ros2 launch ivfusion_ros demo.launch.py                 # then: ros2 topic hz /fused/image
    ros2 launch ivfusion_ros demo.launch.py rate:=5 variant:=max detector:=none

Starts ``scene_publisher`` (``/thermal/image_raw`` mono16 and ``/camera/image_raw`` rgb8 at ``rate`` Hz,
640x512) and ``fusion.launch.py`` with ``config/demo.yaml`` (the scene's thermal->RGB homography).
"""

from __future__ import annotations

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

_HERE = Path(__file__).resolve().parent
_FORWARDED = ("variant", "device", "detector", "log_level")


def _actions(context, *args, **kwargs):
    a = {n: LaunchConfiguration(n).perform(context) for n in ("rate", *_FORWARDED)}
    publisher = Node(package="ivfusion_ros", executable="scene_publisher", name="scene_publisher",
                     parameters=[{"rate": float(a["rate"])}], output="screen")
    fusion = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(_HERE / "fusion.launch.py")),
        launch_arguments={"params_file": str(_HERE.parent / "config" / "demo.yaml"),
                          **{n: a[n] for n in _FORWARDED if a[n]}}.items(),
    )
    return [publisher, fusion]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("rate", default_value="10.0", description="Camera rate of the scene in Hz."),
        DeclareLaunchArgument("variant", default_value="", description="Fusion variant ('' = adaptive)."),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu or cuda ('' = auto)."),
        DeclareLaunchArgument("detector", default_value="", description="ivdet, hog, yolo or none ('' = ivdet)."),
        DeclareLaunchArgument("log_level", default_value="info"),
        OpaqueFunction(function=_actions),
    ])
