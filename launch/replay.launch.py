"""Replay a bag through the fusion node and record what it publishes.

    ros2 launch ivfusion_ros replay.launch.py bag:=/data/night_drive out:=/tmp/night_drive_fused \
        thermal_topic:=/flir/image_raw rgb_topic:=/camera/image_raw variant:=adaptive

Runs ``ros2 bag play --clock`` (so the node runs on the bag's time with ``use_sim_time``), the node from
``fusion.launch.py`` and ``ros2 bag record`` of the node's outputs (fused image, detections, status,
diagnostics; debug image with ``record_debug:=true``). When the playback ends, everything shuts down after
``linger`` seconds, which lets the node finish its last frame.
"""

from __future__ import annotations

from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
    TimerAction,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

_HERE = Path(__file__).resolve().parent
_FORWARDED = ("thermal_topic", "rgb_topic", "params_file", "variant", "namespace", "device", "log_level",
              "compressed", "detector", "model")


def _actions(context, *args, **kwargs):
    a = {n: LaunchConfiguration(n).perform(context) for n in (
        "bag", "out", "rate", "linger", "record_debug", "start_delay", *_FORWARDED)}
    if not a["bag"]:
        raise RuntimeError("replay.launch.py needs bag:=<path to a rosbag2 folder or file>")
    ns = a["namespace"].strip("/")
    prefix = f"/{ns}/" if ns else "/"
    topics = [f"{prefix}fused/image", f"{prefix}detections", f"{prefix}status", "/diagnostics"]
    if a["record_debug"].lower() in ("true", "1", "yes"):
        topics.append(f"{prefix}debug/image")
    out = a["out"] or (a["bag"].rstrip("/") + "_ivfusion")

    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(_HERE / "fusion.launch.py")),
        launch_arguments={**{n: a[n] for n in _FORWARDED if a[n] != ""}, "use_sim_time": "true"}.items(),
    )
    record = ExecuteProcess(cmd=["ros2", "bag", "record", "-o", out, *topics], output="screen")
    play = ExecuteProcess(cmd=["ros2", "bag", "play", a["bag"], "--clock", "--rate", a["rate"]], output="screen")
    linger = float(a["linger"])
    return [
        node,
        record,
        # the node and the recorder need a moment to come up and discover each other before the first frame
        TimerAction(period=float(a["start_delay"]), actions=[play]),
        RegisterEventHandler(OnProcessExit(target_action=play, on_exit=[
            TimerAction(period=linger, actions=[EmitEvent(event=Shutdown(reason="bag playback finished"))]),
        ])),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to play (folder or .mcap/.db3)."),
        DeclareLaunchArgument("out", default_value="", description="Output bag ('' = <bag>_ivfusion)."),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate."),
        DeclareLaunchArgument("linger", default_value="3.0",
                              description="Seconds to keep running after the playback ends."),
        DeclareLaunchArgument("start_delay", default_value="3.0",
                              description="Seconds between starting the node and starting the playback."),
        DeclareLaunchArgument("record_debug", default_value="false", description="Also record debug/image."),
        DeclareLaunchArgument("thermal_topic", default_value="/thermal/image_raw"),
        DeclareLaunchArgument("rgb_topic", default_value="/camera/image_raw"),
        DeclareLaunchArgument("params_file", default_value=""),
        DeclareLaunchArgument("variant", default_value=""),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("device", default_value=""),
        DeclareLaunchArgument("log_level", default_value="info"),
        DeclareLaunchArgument("compressed", default_value=""),
        DeclareLaunchArgument("detector", default_value=""),
        DeclareLaunchArgument("model", default_value=""),
        OpaqueFunction(function=_actions),
    ])
