"""``scene_publisher``: the synthetic night street of ``ivfusion demo`` as two live camera topics.

For trying the node without cameras or bags: renders a :class:`~ivfusion_ros.demo.scene.NightStreetScene`
once and publishes it in a loop, stamped with the node clock,

* ``thermal/image_raw``: ``mono16`` radiometric thermal (centi-kelvin), frame ``thermal_camera``;
* ``camera/image_raw``: ``rgb8``, frame ``rgb_camera``;

both with the same stamp (the rig is hardware-synchronised). The thermal camera is rotated and shifted
against the RGB camera by the scene's homography, which ``config/demo.yaml`` holds for the fusion node.
``ros2 launch ivfusion_ros demo.launch.py`` starts both.
"""

from __future__ import annotations

from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ivfusion_ros.demo.scene import NightStreetScene
from ivfusion_ros.ros.node import image_to_msg

__all__ = ["ScenePublisher", "main"]


class ScenePublisher(Node):
    """Publishes the synthetic scene; parameters ``rate`` (Hz), ``width``, ``height``, ``frames``, ``seed``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("scene_publisher", **kwargs)
        rate = float(self.declare_parameter("rate", 10.0).value)
        width = int(self.declare_parameter("width", 640).value)
        height = int(self.declare_parameter("height", 512).value)
        frames = int(self.declare_parameter("frames", 24).value)
        seed = int(self.declare_parameter("seed", 0).value)
        self.get_logger().info(f"rendering {frames} frames of {width}x{height} ...")
        scene = NightStreetScene(width=width, height=height, num_frames=frames, fps=rate, seed=seed)
        self.frames = [(f.thermal, f.rgb) for f in scene]
        self.pub_thermal = self.create_publisher(Image, "thermal/image_raw", qos_profile_sensor_data)
        self.pub_rgb = self.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        self.index = 0
        self.timer = self.create_timer(1.0 / rate, self._tick)
        self.get_logger().info(f"publishing {self.pub_thermal.topic_name} (mono16) and {self.pub_rgb.topic_name} "
                               f"(rgb8) at {rate:g} Hz")

    def _tick(self) -> None:
        thermal, rgb = self.frames[self.index % len(self.frames)]
        self.index += 1
        stamp = self.get_clock().now().to_msg()
        self.pub_thermal.publish(image_to_msg(Header(stamp=stamp, frame_id="thermal_camera"), thermal, "mono16"))
        self.pub_rgb.publish(image_to_msg(Header(stamp=stamp, frame_id="rgb_camera"), rgb, "rgb8"))


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run ivfusion_ros scene_publisher``."""
    rclpy.init(args=args)
    node = None
    try:
        node = ScenePublisher()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
