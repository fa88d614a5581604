"""Per-stage wall-clock timing of one frame, with device synchronisation where it matters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["StageTimer"]


class StageTimer:
    """Collects ``{stage: milliseconds}`` for one frame.

    On CUDA, kernels run asynchronously: without a synchronisation at each stage boundary the time of a
    stage would be billed to whichever later stage first waits for the GPU. ``sync=True`` pays that cost
    so the numbers mean what their names say.
    """

    def __init__(self, device: torch.device | None = None, sync: bool = True) -> None:
        self._cuda = device is not None and device.type == "cuda" and sync
        self.ms: dict[str, float] = {}

    def reset(self) -> None:
        self.ms = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize()
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3

    @property
    def total(self) -> float:
        return sum(self.ms.values())
