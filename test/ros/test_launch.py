"""launch_testing: ``fusion.launch.py`` of the installed package starts the node and its topics appear.

Runs only in a colcon-built, sourced overlay (it launches ``ros2 run``'s executable from the install space);
anywhere else it skips with the reason. Under pytest the launch_testing plugin runs
:func:`generate_test_description` and then the ``unittest`` cases below while the launch is up; or run it
with ``launch_test test/ros/test_launch.py``.
"""

from __future__ import annotations

import array
import importlib
import os
import time
import unittest

import numpy as np
import pytest


def _missing() -> str | None:
    for module, why in (
        ("rclpy", "ROS 2 (rclpy) is not installed: source a ROS 2 setup.bash and the colcon overlay"),
        ("launch_testing", "launch_testing is not installed in this ROS 2 environment"),
        ("launch_ros", "launch_ros is not installed in this ROS 2 environment"),
        ("ivfusion_ros.msg", "ivfusion_ros is not built: colcon build it and source install/setup.bash"),
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            return why
    try:
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("ivfusion_ros")
    except Exception:
        return "ivfusion_ros is not installed in a sourced colcon overlay (share/ivfusion_ros not found)"
    return None


SKIP_REASON = _missing()
NS = f"/ivf_launch_test_{os.getpid()}"  # other processes may share the ROS domain

# pytest's own collector reaches the unittest classes below only when the launch_testing plugin is not
# active (then nothing would launch the node): skip them there. launch_testing ignores this mark.
pytestmark = pytest.mark.skip(reason=SKIP_REASON or "launch test: run it with `launch_test test/ros/test_launch.py` "
                              "or with pytest and the launch_testing plugin enabled")

if SKIP_REASON is None:
    import launch_testing
    import launch_testing.actions
    import rclpy
    from ament_index_python.packages import get_package_share_directory
    from ivfusion_ros.msg import FusionStatus
    from launch import LaunchDescription
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from sensor_msgs.msg import Image

    from ivfusion_ros.ros.conversions import image_fields, sec_to_stamp

    @pytest.mark.launch_test
    def generate_test_description():
        share = get_package_share_directory("ivfusion_ros")
        fusion = IncludeLaunchDescription(
            PythonLaunchDescriptionSource(f"{share}/launch/fusion.launch.py"),
            launch_arguments={"namespace": NS, "thermal_topic": f"{NS}/cam_thermal", "rgb_topic": f"{NS}/cam_rgb",
                              "detector": "none", "device": "cpu", "variant": "average"}.items(),
        )
        return LaunchDescription([fusion, launch_testing.actions.ReadyToTest()])

    def _image(img: np.ndarray, encoding: str, t: float, frame: str) -> Image:
        f = image_fields(img, encoding)
        msg = Image(height=f.height, width=f.width, encoding=f.encoding, is_bigendian=f.is_bigendian, step=f.step)
        msg.data = array.array("B", f.data)
        msg.header.frame_id = frame
        msg.header.stamp.sec, msg.header.stamp.nanosec = sec_to_stamp(t)
        return msg

    class TestFusionLaunch(unittest.TestCase):
        @classmethod
        def setUpClass(cls) -> None:
            rclpy.init()
            cls.node = rclpy.create_node("ivf_launch_probe")

        @classmethod
        def tearDownClass(cls) -> None:
            cls.node.destroy_node()
            rclpy.shutdown()

        def test_topics_appear_and_a_pair_is_fused(self) -> None:
            node = self.node
            statuses: list = []
            node.create_subscription(FusionStatus, f"{NS}/status", statuses.append, 10)
            pub_t = node.create_publisher(Image, f"{NS}/cam_thermal", 10)
            pub_r = node.create_publisher(Image, f"{NS}/cam_rgb", 10)
            wanted = {f"{NS}/fused/image", f"{NS}/detections", f"{NS}/status", f"{NS}/debug/image", "/diagnostics"}
            end = time.monotonic() + 60.0  # the node imports torch and builds the pipeline first
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.1)
                topics = {name for name, _ in node.get_topic_names_and_types()}
                if wanted <= topics and pub_t.get_subscription_count() and pub_r.get_subscription_count():
                    break
            else:
                self.fail(f"topics missing: {sorted(wanted - topics)}")
            thermal = np.full((48, 64), 29000, np.uint16)
            thermal[10:30, 20:30] = 31000
            rgb = np.full((48, 64, 3), 20, np.uint8)
            t = 100.0
            end = time.monotonic() + 30.0
            while not statuses and time.monotonic() < end:
                t += 0.1
                pub_t.publish(_image(thermal, "mono16", t, "thermal"))
                pub_r.publish(_image(rgb, "rgb8", t, "rgb"))
                for _ in range(3):
                    rclpy.spin_once(node, timeout_sec=0.05)
            assert statuses, "no status message from the launched node"
            assert statuses[-1].variant == "average" and statuses[-1].header.frame_id == "rgb"

    @launch_testing.post_shutdown_test()
    class TestShutdown(unittest.TestCase):
        def test_exit_code(self, proc_info) -> None:
            launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15, 130])

else:

    def test_launch_file() -> None:
        """Placeholder so that the skip and its reason show up in the report."""
