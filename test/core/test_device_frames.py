"""The device-side image decoding (the CUDA path) against the host path, run on the CPU here and on CUDA there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ivfusion_ros.config import ThermalConfig
from ivfusion_ros.core.device_frames import DeviceThermalNormalizer, HostToDevice, decode_rgb_tensor
from ivfusion_ros.core.frames import ThermalNormalizer, decode_rgb
from ivfusion_ros.errors import InputError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _thermal(encoding: str, rng: np.random.Generator, h: int = 480, w: int = 640) -> np.ndarray:
    if encoding == "mono8":
        return rng.integers(0, 256, (h, w), np.uint8)
    if encoding == "mono16":
        return (rng.normal(29500, 300, (h, w))).clip(0, 65535).astype(np.uint16)
    img = rng.normal(300.0, 5.0, (h, w)).astype(np.float32)
    img[5, 7], img[100, 3], img[17, 400] = np.nan, np.inf, -np.inf
    return img


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("agc", ["percentile", "minmax", "fixed"])
@pytest.mark.parametrize("encoding", ["mono8", "mono16", "32FC1"])
def test_thermal_gain_control_matches_the_host_over_frames(device, agc, encoding) -> None:
    cfg = ThermalConfig(agc=agc, fixed_min=29000.0 if encoding == "mono16" else 280.0,
                        fixed_max=30500.0 if encoding == "mono16" else 320.0, agc_smoothing=0.8)
    host, dev_host = ThermalNormalizer(cfg), ThermalNormalizer(cfg)
    dev = DeviceThermalNormalizer(dev_host, device)
    rng = np.random.default_rng(0)
    for _ in range(4):  # the smoothed range is state: it must evolve the same way
        img = _thermal(encoding, rng)
        ref = host(img, encoding)
        got = dev(torch.from_numpy(img).to(device), encoding)[0, 0].cpu().numpy()
        np.testing.assert_allclose(got, ref, atol=2e-5)
    assert dev_host.invalid_fraction == pytest.approx(host.invalid_fraction)


@pytest.mark.parametrize("device", DEVICES)
def test_thermal_all_nan_is_refused_and_invert_applies(device) -> None:
    dev = DeviceThermalNormalizer(ThermalNormalizer(ThermalConfig()), device)
    with pytest.raises(InputError, match="no finite pixels") as err:
        dev(torch.full((8, 8), float("nan"), device=device), "32FC1")
    assert err.value.reason == "nan"
    inv = DeviceThermalNormalizer(ThermalNormalizer(ThermalConfig(invert=True)), device)
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    got = inv(torch.from_numpy(img).to(device), "mono8")[0, 0].cpu().numpy()
    np.testing.assert_allclose(got, 1.0 - img / 255.0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_rgb_decoding_matches_the_host(device, encoding) -> None:
    rng = np.random.default_rng(1)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
    raw = rng.integers(0, 256, (48, 64, channels) if channels > 1 else (48, 64), np.uint8)
    ref = decode_rgb(raw, encoding).astype(np.float32) / 255.0
    got = decode_rgb_tensor(torch.from_numpy(raw).to(device), encoding)[0].permute(1, 2, 0).cpu().numpy()
    np.testing.assert_allclose(got, ref, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pinned staging buffers)")
def test_host_to_device_reuses_its_pinned_buffer() -> None:
    up = HostToDevice(torch.device("cuda"))
    a = np.arange(12, dtype=np.uint16).reshape(3, 4)
    first = up(a)
    np.testing.assert_array_equal(first.cpu().numpy(), a)
    second = up(a + 1)
    assert second.data_ptr() == first.data_ptr()  # one device buffer per shape and dtype
    np.testing.assert_array_equal(second.cpu().numpy(), a + 1)
    assert len(up._buffers) == 1
    up(np.zeros((3, 4), np.uint8))
    assert len(up._buffers) == 2
