"""CUDA graphs for the pipeline's own stages (decode, registration, illumination, fusion, detection post-processing).

A 640x512 frame is cheap for an H100 but each stage is dozens of small kernels, and launching them one by one from
Python costs more than running them: the GPU waits for the CPU. Capturing each stage once per input signature and
replaying it afterwards turns dozens of launches into one. Stages are captured only where they are pure device
work: no read-back to the host, no shapes that depend on the data; a stage whose capture fails (an unexpected
synchronisation, say) runs eagerly from then on, with one warning.

Stage functions must not modify their inputs and must return a tuple of tensors; those outputs are overwritten by
the next replay of the same graph. The tensors of the capturing call become the graph's static inputs: a later call
that passes the same tensors (a persistent upload buffer, the static outputs of the previous stage's graph) costs no
copy; other tensors are copied in (one device-to-device copy each).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

__all__ = ["CapturedGraph", "StageGraphs"]

_LOG = logging.getLogger(__name__)


class CapturedGraph:
    """One captured CUDA graph with its static inputs and outputs."""

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor],
                 warmup: int = 2) -> None:
        self.inputs = list(inputs)  # adopted, not cloned: stable buffers of the caller then need no copy per call
        stream = torch.cuda.Stream(device=self.inputs[0].device)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture: lazy allocations and cuDNN choices happen here
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = tuple(fn(*self.inputs))

    def __call__(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        for static, x in zip(self.inputs, inputs):
            if static.data_ptr() != x.data_ptr():
                static.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.outputs


class StageGraphs:
    """Named stage graphs of one pipeline, keyed by stage and input signature.

    Args:
        enabled: capture at all (CUDA and ``runtime.cuda_graphs``); when off, stages run eagerly.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._graphs: dict[tuple, CapturedGraph] = {}
        self._eager: set[str] = set()

    def clear(self) -> None:
        """Forget every graph (after a configuration change: the captured kernels hold the old parameters)."""
        self._graphs.clear()
        self._eager.clear()

    def run(self, name: str, fn: Callable[..., Sequence[torch.Tensor]], *inputs: torch.Tensor,
            key: tuple = ()) -> tuple[torch.Tensor, ...]:
        """``fn(*inputs)``, from a graph captured on first sight of this stage, input signature and ``key``."""
        if not self.enabled or name in self._eager:
            return tuple(fn(*inputs))
        sig = (name, key, *((tuple(x.shape), x.dtype, x.device) for x in inputs))
        graph = self._graphs.get(sig)
        if graph is None:
            try:
                graph = self._graphs[sig] = CapturedGraph(fn, inputs)
            except Exception as err:  # a sync or a data-dependent shape inside fn: run it eagerly from now on
                _LOG.warning("stage %s cannot be captured in a CUDA graph (%s: %s); running it eagerly", name,
                             type(err).__name__, str(err).splitlines()[0] if str(err) else "")
                self._eager.add(name)
                torch.cuda.synchronize()
                return tuple(fn(*inputs))
        return graph(inputs)

    def __len__(self) -> int:
        return len(self._graphs)
