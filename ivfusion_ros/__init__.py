"""ivfusion_ros: thermal + RGB fusion and detection for robots.

The package is importable without ROS: everything that touches rclpy lives in ``ivfusion_ros.ros``.
Heavy modules (torch, onnxruntime) load lazily so ``import ivfusion_ros`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Pipeline", "PipelineConfig", "Result", "__version__", "load_config"]

if TYPE_CHECKING:
    from ivfusion_ros.config import PipelineConfig, load_config
    from ivfusion_ros.pipeline import Pipeline, Result


def __getattr__(name: str) -> Any:
    if name in ("PipelineConfig", "load_config"):
        from ivfusion_ros import config

        return getattr(config, name)
    if name in ("Pipeline", "Result"):
        from ivfusion_ros import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ivfusion_ros' has no attribute {name!r}")
