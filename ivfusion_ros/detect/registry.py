"""Name -> detector factory registry behind ``detector.type``.

Built-in detectors register themselves when their module is imported; the registry imports a built-in
module only when that detector is created, so choosing ``hog`` never imports onnxruntime. Third-party
detectors register with :func:`register_detector` (their module must be imported before
:func:`create_detector` is called).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TypeVar

from ivfusion_ros.config import DetectorConfig, RuntimeConfig
from ivfusion_ros.detect.base import Detector
from ivfusion_ros.errors import ConfigError

__all__ = ["DetectorFactory", "create_detector", "list_detectors", "register_detector"]

#: Anything called as ``factory(cfg, device=..., threads=...)`` returning a :class:`Detector`; a
#: :class:`Detector` subclass with that constructor signature is the usual case. Factories with a ``runtime``
#: keyword also get the ``runtime`` section (precision, CUDA graphs, engine cache).
DetectorFactory = Callable[..., Detector]
F = TypeVar("F", bound=DetectorFactory)

_BUILTINS: dict[str, str] = {
    "hog": "ivfusion_ros.detect.hog",
    "ivdet": "ivfusion_ros.detect.ivdet",
    "none": "ivfusion_ros.detect.null",
    "yolo": "ivfusion_ros.detect.yolo",
}
_REGISTRY: dict[str, DetectorFactory] = {}


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def register_detector(name: str) -> Callable[[F], F]:
    """Class/function decorator that makes a detector available as ``detector.type: <name>``.

    Re-registering the same object (or a reloaded copy of it) is allowed; a different object under a taken
    name is a programming error (``ValueError``).
    """

    def deco(factory: F) -> F:
        old = _REGISTRY.get(name)
        if old is not None and old is not factory and _qualname(old) != _qualname(factory):
            raise ValueError(f"detector {name!r} is already registered by {_qualname(old)}")
        _REGISTRY[name] = factory
        if isinstance(factory, type) and issubclass(factory, Detector) and not factory.name:
            factory.name = name
        return factory

    return deco


def list_detectors() -> list[str]:
    """Names accepted by :func:`create_detector`, sorted."""
    return sorted(set(_BUILTINS) | set(_REGISTRY))


def create_detector(cfg: DetectorConfig, device: str = "cpu", threads: int = 0,
                    runtime: RuntimeConfig | None = None) -> Detector:
    """Build the detector that ``cfg.type`` names.

    Args:
        cfg: the ``detector`` section of the config.
        device: ``auto``, ``cpu`` or ``cuda`` (``runtime.device``); detectors without a GPU path ignore it.
        threads: CPU threads for the backend, 0 = library default (``runtime.threads``).
        runtime: the ``runtime`` section, for detectors whose factory takes it (the YOLO detector's backends).

    Raises:
        ConfigError: unknown ``cfg.type`` (the message lists the valid ones) or a bad detector setting.
        ModelError: the detector's model cannot be loaded.
    """
    name = cfg.type
    if name not in _REGISTRY and name in _BUILTINS:
        importlib.import_module(_BUILTINS[name])
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ConfigError(f"detector.type: unknown detector {name!r}; valid: {', '.join(list_detectors())}")
    if runtime is not None and "runtime" in inspect.signature(factory).parameters:
        return factory(cfg, device=device, threads=threads, runtime=runtime)
    return factory(cfg, device=device, threads=threads)
