"""The fusion variant registry: ``create_fuser(name, ...)`` and ``list_fusers()``.

Each variant registers its class with a name, a one-line description and what weights it needs, so the
CLI, the node and the docs can list variants without importing torch models they will not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ivfusion_ros.config import FusionConfig, PipelineConfig, RuntimeConfig, config_from_flat
from ivfusion_ros.errors import ConfigError

__all__ = ["FuserInfo", "create_fuser", "fuser_info", "list_fusers", "register_fuser"]


@dataclass(frozen=True)
class FuserInfo:
    """What the registry knows about a variant without building it."""

    name: str
    description: str
    needs_weights: bool  # True: learned variant; its weights come from fusion.weights or the package
    cls: type


_REGISTRY: dict[str, FuserInfo] = {}
T = TypeVar("T", bound=type)


def register_fuser(name: str, description: str, needs_weights: bool = False) -> Callable[[T], T]:
    """Class decorator adding a :class:`~ivfusion_ros.fusion.base.Fuser` subclass to the registry."""

    def deco(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"fusion variant {name!r} registered twice")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = FuserInfo(name, description, needs_weights, cls)
        return cls

    return deco


def _ensure_builtin() -> None:
    # importing the modules runs their @register_fuser decorators
    from ivfusion_ros.fusion import adaptive, baselines, learned  # noqa: F401


def list_fusers() -> list[FuserInfo]:
    """All registered variants, sorted by name."""
    _ensure_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def fuser_info(name: str) -> FuserInfo:
    """Registry entry of ``name``.

    Raises:
        ConfigError: unknown variant; the message lists the valid ones.
    """
    _ensure_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"fusion.variant: unknown variant {name!r} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def create_fuser(
    name: str, config: FusionConfig | None = None, device: str | torch.device = "cpu", *,
    runtime: RuntimeConfig | None = None, **overrides: Any
) -> Any:
    """Build variant ``name``.

    Args:
        name: registry name, e.g. ``"adaptive"``.
        config: fusion parameters (defaults when ``None``).
        device: torch device the variant runs on.
        runtime: the ``runtime`` section (precision, CUDA graphs, engine cache) for variants that run a network.
        **overrides: ``FusionConfig`` fields to change, e.g. ``levels=3`` (validated like the YAML).
    """
    info = fuser_info(name)
    cfg = config or FusionConfig()
    if overrides:
        flat = {f"fusion.{k}": v for k, v in overrides.items()}
        cfg = config_from_flat(flat, base=PipelineConfig(fusion=cfg)).fusion
    return info.cls(cfg, torch.device(device), runtime)
