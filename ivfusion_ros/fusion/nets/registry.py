"""Registry of fusion networks (timm style): one tiny registered function per size.

Each function names its architecture arguments and calls its family's builder, e.g.::

    @register_net("amfusion", "Real-time AMFusion.")
    def amfusion_s(**overrides):
        return _create_amfusion("amfusion-s", dict(channels=(8, 16, 32), ...), overrides)

The builder returns an ``nn.Module`` with ``variant`` (registry name), ``family`` and ``config`` (the
keyword arguments it was built with, JSON-serialisable) so a weights file can rebuild it exactly:
``create_net(meta["variant"], **meta["config"])``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from ivfusion_ros.errors import ConfigError

__all__ = ["NetInfo", "create_net", "identify", "list_nets", "net_info", "register_net"]


@dataclass(frozen=True)
class NetInfo:
    """A registered network: registry name, family (the fusion variant that runs it) and builder."""

    name: str
    family: str
    description: str
    fn: Callable[..., nn.Module]


_NETS: dict[str, NetInfo] = {}
N = TypeVar("N", bound=nn.Module)


def register_net(family: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a size function; its name with ``_`` as ``-`` is the registry name.

    ``amfusion_s`` registers ``amfusion-s``: Python names cannot hold ``-``, model names conventionally do.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__.replace("_", "-")
        if name in _NETS:
            raise ValueError(f"network {name!r} registered twice")
        _NETS[name] = NetInfo(name, family, description, fn)
        return fn

    return deco


def identify(net: N, variant: str, family: str, config: dict[str, Any]) -> N:
    """Stamp a freshly built network with its registry name, family and size config (tuples as lists, so the
    config is JSON-serialisable and rebuilds the architecture from a weights file); returns ``net``."""
    net.variant = variant
    net.family = family
    net.config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    return net


def _ensure_builtin() -> None:
    from ivfusion_ros.fusion.nets import amfusion, ldfusion, t2p, tsjnet  # noqa: F401


def list_nets(pattern: str = "*") -> list[str]:
    """Registered network names matching the glob ``pattern``, sorted."""
    _ensure_builtin()
    return sorted(n for n in _NETS if fnmatch.fnmatch(n, pattern))


def net_info(name: str) -> NetInfo:
    """Registry entry of ``name``; an unknown name raises :class:`ConfigError` listing the valid ones."""
    _ensure_builtin()
    if name not in _NETS:
        raise ConfigError(f"unknown network {name!r} (available: {', '.join(sorted(_NETS))})")
    return _NETS[name]


def create_net(name: str, **overrides: Any) -> nn.Module:
    """Build network ``name``; ``overrides`` replace entries of its size config (e.g. ``channels=(4, 8, 8)``)."""
    info = net_info(name)
    try:
        return info.fn(**overrides)
    except (TypeError, ValueError) as err:  # unknown keyword, or a combination the architecture rejects
        raise ConfigError(f"network {name!r}: bad configuration {overrides}: {err}") from None
