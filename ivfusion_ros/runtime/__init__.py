"""Inference runtimes (ONNX Runtime sessions).

Names load lazily so that importing this package does not import onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["OnnxModel", "available_providers"]

if TYPE_CHECKING:
    from ivfusion_ros.runtime.onnx_session import OnnxModel, available_providers


def __getattr__(name: str) -> Any:
    if name in ("OnnxModel", "available_providers"):
        from ivfusion_ros.runtime import onnx_session

        return getattr(onnx_session, name)
    raise AttributeError(f"module 'ivfusion_ros.runtime' has no attribute {name!r}")
