"""pip entry point; all metadata lives in setup.cfg (colcon ignores this file: the ROS build is ament_cmake)."""

from setuptools import setup

setup()
