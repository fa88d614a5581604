"""Export a YOLOv8n-sized network with random weights to ONNX, for latency benchmarks only.

No detector weights ship with the package and nothing may be downloaded, so the ONNX detector's cost is
measured on a network of the same architecture family and size as YOLOv8n (CSP-Darknet backbone with C2f
blocks, SPPF, PAN neck, decoupled anchor-free head; ~3.2 M parameters, ~8.7 GFLOPs at 640x640) whose
output has the YOLOv8 layout ``[1, 4 + 80, 8400]``. Its detections are meaningless; its run time is what a
real YOLOv8n costs on the same runtime.

    python benchmarks/yolov8n_like.py /tmp/yolov8n_like.onnx           # ONNX (onnxruntime, tensorrt)
    python benchmarks/yolov8n_like.py /tmp/yolov8n_like.torchscript    # TorchScript (detector.backend torch)
    ivfusion bench --detectors hog,/tmp/yolov8n_like.onnx

The class biases start where Ultralytics initialises them (``log(5 / nc / (640 / stride)^2)``), so, like a real
detector on an ordinary frame, few candidates pass the score threshold and NMS costs what it costs in use.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import torch
from torch import nn


class Conv(nn.Sequential):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1, self.cv2, self.add = Conv(c, c, 3), Conv(c, c, 3), shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c1, c1 // 2), Conv(c1 * 2, c2)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class YoloV8nLike(nn.Module):
    """Width 0.25, depth 0.33 of YOLOv8 (the 'n' scale); output ``[B, 84, N]`` with boxes in pixels."""

    def __init__(self, nc: int = 80, reg_max: int = 16, size: int = 640) -> None:
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        self.b0 = nn.Sequential(Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32, 1))
        self.b1 = nn.Sequential(Conv(32, 64, 3, 2), C2f(64, 64, 2))  # P3, stride 8
        self.b2 = nn.Sequential(Conv(64, 128, 3, 2), C2f(128, 128, 2))  # P4, stride 16
        self.b3 = nn.Sequential(Conv(128, 256, 3, 2), C2f(256, 256, 1), SPPF(256, 256))  # P5, stride 32
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1, self.n2 = C2f(384, 128, 1, False), C2f(192, 64, 1, False)
        self.d1, self.n3 = Conv(64, 64, 3, 2), C2f(192, 128, 1, False)
        self.d2, self.n4 = Conv(128, 128, 3, 2), C2f(384, 256, 1, False)
        c2, c3 = 64, 80
        self.box = nn.ModuleList(nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for c in (64, 128, 256))
        self.cls = nn.ModuleList(nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1))
                                 for c in (64, 128, 256))
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float32))
        for head, stride in zip(self.cls, (8, 16, 32)):
            nn.init.constant_(head[-1].bias, math.log(5 / nc / (640 / stride) ** 2))
        for i, stride in enumerate((8, 16, 32)):  # anchor centres as buffers: traced graphs follow the device
            n = size // stride
            ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                                    indexing="ij")
            self.register_buffer(f"anchors{i}", torch.stack((xs.reshape(-1), ys.reshape(-1)))[None] + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b1(self.b0(x))
        p4 = self.b2(p3)
        p5 = self.b3(p4)
        h4 = self.n1(torch.cat((self.up(p5), p4), 1))
        h3 = self.n2(torch.cat((self.up(h4), p3), 1))
        h4 = self.n3(torch.cat((self.d1(h3), h4), 1))
        h5 = self.n4(torch.cat((self.d2(h4), p5), 1))
        outs = []
        for i, (feat, stride) in enumerate(((h3, 8), (h4, 16), (h5, 32))):
            b, _, h, w = feat.shape
            dist = self.box[i](feat).view(b, 4, self.reg_max, h * w).softmax(2)
            dist = (dist * self.proj.view(1, 1, -1, 1)).sum(2)  # DFL: expected distance per side
            anchors = getattr(self, f"anchors{i}")
            lt, rb = anchors - dist[:, :2], anchors + dist[:, 2:]
            xywh = torch.cat(((lt + rb) / 2, rb - lt), 1) * stride
            outs.append(torch.cat((xywh, self.cls[i](feat).view(b, self.nc, h * w).sigmoid()), 1))
        return torch.cat(outs, 2)


def export(path: Path, size: int = 640) -> Path:
    torch.manual_seed(0)
    model = YoloV8nLike().eval()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter works offline
    example = torch.zeros(1, 3, size, size)
    if path.suffix == ".torchscript":  # as Ultralytics' format=torchscript: metadata in config.txt
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={"config.txt": json.dumps({"imgsz": [size, size]})})
        return path
    torch.onnx.export(model, (example,), str(path), opset_version=17,
                      input_names=["images"], output_names=["output0"], dynamo=False)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "yolov8n_like.onnx")
    n = sum(p.numel() for p in YoloV8nLike().parameters())
    print(f"exported {export(out)} ({n / 1e6:.2f} M parameters, output [1, 84, 8400])")
