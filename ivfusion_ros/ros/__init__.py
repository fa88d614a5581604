"""The ROS 2 front end: the ``fusion_node`` node, its parameters and the message conversions.

This is the only subpackage that imports ROS (rclpy, message_filters and the message packages), and only in
:mod:`ivfusion_ros.ros.node` and :mod:`ivfusion_ros.ros.params` at call time or module level respectively.
:mod:`ivfusion_ros.ros.conversions` is pure numpy/OpenCV and works on any object with the message's fields
(rclpy messages, ``rosbags`` messages), so the bag replay tools and the tests use it without a ROS install.
"""
