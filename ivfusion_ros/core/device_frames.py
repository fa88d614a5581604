"""Camera images onto the GPU: one pinned host->device copy per image, then decoding on the device.

On the CPU the pipeline decodes with numpy/OpenCV (:mod:`ivfusion_ros.core.frames`) and wraps the result without a
copy. On CUDA the raw image (uint8 / uint16 / float32, as the camera sent it) is copied once through a pinned
staging buffer that is reused frame after frame (a pageable source would make CUDA stage it through a temporary
pinned buffer on every copy), and everything after that runs on the device:

* RGB: channel order and alpha (``bgr8``, ``rgba8``, ``bgra8``, ``mono8``) by indexing, then float [0, 1];
* thermal: the automatic gain control of :class:`~ivfusion_ros.core.frames.ThermalNormalizer` (fixed, min/max, or
  percentiles of the same strided subsample), whose smoothed range stays on the device between frames so no frame
  waits for the host. The one exception is ``32FC1`` with invalid pixels: counting them for the status message and
  refusing an all-NaN frame need one small read-back.

The pipeline checks encoding, dtype and shape with the host path's :func:`~ivfusion_ros.core.frames.check_image`
before the upload, so a bad image fails the same way on both paths; the tests compare the two paths' outputs.
"""

from __future__ import annotations

import numpy as np
import torch

from ivfusion_ros.core.frames import ThermalNormalizer, agc_stride
from ivfusion_ros.errors import InputError

__all__ = ["DeviceThermalNormalizer", "HostToDevice", "decode_rgb_tensor"]

_RGB_ORDER = {"bgr8": [2, 1, 0], "bgra8": [2, 1, 0], "rgba8": [0, 1, 2]}


class HostToDevice:
    """Copies host arrays to the device through reused pinned buffers (one per image shape and dtype).

    The copy is asynchronous; before a pinned buffer is refilled, the previous copy out of it is waited for (an
    event), which by then has long finished because the frame it carried was processed in between.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.cuda.Event]] = {}

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        """The array's contents on the device (a buffer reused by the next call with the same shape and dtype)."""
        key = (array.shape, array.dtype.str)
        entry = self._buffers.get(key)
        if entry is None:
            host = torch.empty(array.shape, dtype=torch.from_numpy(array[:0]).dtype, pin_memory=True)
            entry = self._buffers[key] = (host, torch.empty_like(host, device=self.device), torch.cuda.Event())
        host, dev, done = entry
        done.synchronize()
        np.copyto(host.numpy(), array, casting="no")
        dev.copy_(host, non_blocking=True)
        done.record()
        return dev


def decode_rgb_tensor(raw: torch.Tensor, encoding: str) -> torch.Tensor:
    """Raw ``(H, W, C)`` / ``(H, W)`` uint8 on the device -> ``(1, 3, H, W)`` float RGB in [0, 1]."""
    if raw.dim() == 2 or encoding == "mono8":
        gray = raw if raw.dim() == 2 else raw[..., 0]
        chw = gray.unsqueeze(0).expand(3, -1, -1)
    else:
        order = _RGB_ORDER.get(encoding)
        chw = raw.permute(2, 0, 1)
        chw = chw[order] if order is not None else chw
    return chw.unsqueeze(0).float().div_(255.0)


class DeviceThermalNormalizer:
    """:class:`ThermalNormalizer`'s gain control on the device, state kept there (see the module docstring).

    For integer encodings the work is a pure function of the raw image and the smoothed range (:meth:`decode`),
    which the pipeline captures in a CUDA graph; ``32FC1`` goes through :meth:`__call__`, which reads the
    invalid-pixel count back.
    """

    def __init__(self, host: ThermalNormalizer, device: torch.device | str) -> None:
        self.host = host  # config, and the invalid-pixel share the status message reads
        self.range: torch.Tensor | None = None  # smoothed (lo, hi), float64
        self._no_range = torch.full((2,), torch.nan, dtype=torch.float64, device=device)  # before the first frame

    def reset(self) -> None:
        self.range = None

    @property
    def state(self) -> torch.Tensor:
        """The smoothed range to continue from (NaN before the first frame), an input of :meth:`decode`."""
        return self.range if self.range is not None else self._no_range

    def __call__(self, raw: torch.Tensor, encoding: str) -> torch.Tensor:
        """Raw thermal ``(H, W)`` on the device -> float32 ``(1, 1, H, W)`` intensity in [0, 1]; updates the state."""
        finite = None
        if raw.dtype == torch.float32:
            finite = torch.isfinite(raw)
            n_bad = int(raw.numel() - finite.sum().item())  # the one read-back: 32FC1 only
            self.host.invalid_fraction = n_bad / raw.numel()
            if n_bad == raw.numel():
                raise InputError("thermal image has no finite pixels (all NaN/inf)", reason="nan")
            if n_bad == 0:
                finite = None
        out, self.range = self.decode(raw, self.state, finite)
        return out

    def decode(self, raw: torch.Tensor, state: torch.Tensor, finite: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(intensity (1, 1, H, W), new smoothed range)`` from ``raw`` and the previous range (NaN = none yet).

        No read-back and no data-dependent shapes unless ``finite`` is given (32FC1 with invalid pixels).
        """
        cfg = self.host.cfg
        if raw.dtype == torch.uint8:
            out = raw.float().mul_(1.0 / 255.0)
            new_state = state
        else:
            xf = raw.float()
            rng = self._agc(xf, finite)
            if cfg.agc_smoothing > 0 and cfg.agc != "fixed":
                a = cfg.agc_smoothing
                rng = torch.where(torch.isnan(state), rng, a * state + (1 - a) * rng)
            new_state = rng
            lo, hi = rng.float()
            out = (xf - lo).mul_(1.0 / (hi - lo).clamp(min=1e-6))
            if finite is not None:
                out = torch.where(finite, out, torch.zeros((), device=out.device))
            out.clamp_(0.0, 1.0)
        if cfg.invert:
            out = 1.0 - out
        return out[None, None], new_state

    def _agc(self, xf: torch.Tensor, finite: torch.Tensor | None) -> torch.Tensor:
        """The raw range ``(lo, hi)`` as float64 on the device (percentiles as numpy's default, linear)."""
        cfg = self.host.cfg
        if cfg.agc == "fixed":
            return torch.stack([torch.full((), v, dtype=torch.float64, device=xf.device)  # fills, no host copy
                                for v in (cfg.fixed_min, cfg.fixed_max)])
        if cfg.agc == "minmax":
            lo_src = xf if finite is None else torch.where(finite, xf, torch.inf)
            hi_src = xf if finite is None else torch.where(finite, xf, -torch.inf)
            return torch.stack((lo_src.amin(), hi_src.amax())).double()
        k = agc_stride(xf.numel())
        if finite is not None:  # 32FC1 with invalid pixels (already read back once): NaN them out
            sample = torch.where(finite[::k, ::k], xf[::k, ::k], torch.nan)
            if not bool(finite[::k, ::k].any()):  # every finite pixel was skipped by the stride
                sample = torch.where(finite, xf, torch.nan)
            q = torch.tensor([cfg.low_percentile, cfg.high_percentile], dtype=torch.float64,
                             device=xf.device) / 100.0
            return torch.nanquantile(sample.reshape(-1).double(), q)
        # no NaN: sort once and interpolate at positions known on the host (torch.quantile would check q on the
        # host, a synchronisation that also breaks graph capture)
        values = xf[::k, ::k].reshape(-1).sort().values.double()
        n = values.numel()
        picks = []
        for pct in (cfg.low_percentile, cfg.high_percentile):
            pos = pct / 100.0 * (n - 1)
            i = min(int(pos), n - 1)
            j = min(i + 1, n - 1)
            frac = pos - i
            picks.append(values[i] + (values[j] - values[i]) * frac)
        return torch.stack(picks)
