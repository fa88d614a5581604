"""Choosing the torch device once, with a clear word when CUDA was asked for and is missing."""

from __future__ import annotations

import logging

import torch

from ivfusion_ros.errors import ConfigError

__all__ = ["resolve_device"]

_log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """Map ``runtime.device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``) to a :class:`torch.device`.

    ``auto`` picks CUDA when torch sees a GPU and falls back to the CPU with a warning, because a robot
    that silently runs fusion on its CPU misses its frame budget and the operator should know why.

    Raises:
        ConfigError: ``cuda`` was asked for explicitly and torch sees no GPU.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        _log.warning("runtime.device=auto: no CUDA device visible to torch, running on the CPU")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"runtime.device={name}: torch sees no CUDA device (use auto or cpu)")
        return torch.device(name)
    raise ConfigError(f"runtime.device: {name!r} is not one of auto, cpu, cuda")
