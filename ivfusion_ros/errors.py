"""One error family for the whole package.

Every failure a user can cause (a bad parameter, an image the pipeline cannot read, a missing or corrupt
model) raises a subclass of :class:`IvfusionError` whose message names the key, encoding or file at fault.
The CLI turns them into exit code 1 with the message; the ROS node logs them and counts a dropped frame.
Anything else escaping the package is a bug.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "IvfusionError", "ModelError"]


class IvfusionError(Exception):
    """Root of all errors raised on purpose by ivfusion_ros."""


class ConfigError(IvfusionError, ValueError):
    """A parameter is unknown, has the wrong type or lies outside its range."""


class InputError(IvfusionError, ValueError):
    """An input image or message cannot be used (encoding, size, channels, empty data)."""

    def __init__(self, message: str, reason: str = "bad_input") -> None:
        super().__init__(message)
        #: Short machine-readable reason, used as the drop counter key by the node and the replay tool.
        self.reason = reason


class ModelError(IvfusionError, RuntimeError):
    """A model file is missing, corrupt, of the wrong kind, or cannot run on the chosen backend."""
