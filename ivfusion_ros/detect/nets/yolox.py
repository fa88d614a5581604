"""YOLOX-nano: the architecture of the package's own detector, written for this package.

The network is YOLOX (Ge et al., "YOLOX: Exceeding YOLO Series in 2021", arXiv 2107.08430) at the nano size:
a depthwise CSPDarknet backbone (Focus stem, width 0.25, depth 0.33, SPP), a PAFPN neck and a decoupled,
anchor-free head on strides 8, 16 and 32. Batch normalisation is folded into the convolutions (conv + bias +
SiLU), as in the public COCO export the shipped weights were fine-tuned from, so :func:`load_onnx_weights` can map
that export's initializers onto this module one convolution at a time.

Input and output are those of the package's YOLO path (:mod:`ivfusion_ros.detect.yolo`), so the shipped model runs
through the same letterbox, decode and NMS as any YOLO export on every backend:

* input ``(B, 3, H, W)`` float RGB in [0, 1], H and W multiples of 32 (the COCO weights expect BGR 0-255; the
  conversion is the first op of :meth:`YoloxNano.forward`);
* :meth:`YoloxNano.forward` returns ``(B, N, 5 + C)`` rows ``cx, cy, w, h, objectness, class scores`` in input
  pixels with sigmoids applied: the ``yolov5`` layout of :mod:`~ivfusion_ros.detect.yolo_decode`;
* :meth:`YoloxNano.raw` returns the same rows before decoding (grid offsets, log sizes, logits) for the loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.errors import ModelError

__all__ = ["STRIDES", "YoloxNano", "load_onnx_weights", "make_grid"]

#: Output strides of the three head levels.
STRIDES = (8, 16, 32)


class ConvAct(nn.Module):
    """Convolution with bias (batch norm folded in) and SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(x))


class DWConv(nn.Module):
    """Depthwise ``k x k`` then pointwise ``1 x 1`` convolution, each with SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.dconv = ConvAct(cin, cin, k, stride, groups=cin)
        self.pconv = ConvAct(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = ConvAct(c, c, 1)
        self.conv2 = DWConv(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.shortcut else y


class CSPLayer(nn.Module):
    """Cross-stage partial block: half the channels through ``n`` bottlenecks, half straight, then mixed."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True) -> None:
        super().__init__()
        hidden = cout // 2
        self.conv1 = ConvAct(cin, hidden, 1)
        self.conv2 = ConvAct(cin, hidden, 1)
        self.conv3 = ConvAct(2 * hidden, cout, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = self.conv2(x)
        return self.conv3(torch.cat((self.m(a), b), dim=1))


class SPP(nn.Module):
    def __init__(self, cin: int, cout: int, kernels: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = cin // 2
        self.conv1 = ConvAct(cin, hidden, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvAct(hidden * (len(kernels) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(p(x) for p in self.pools)], dim=1))


class Backbone(nn.Module):
    """Focus stem + four stages; returns the stride 8, 16 and 32 features."""

    def __init__(self, base: int = 16, depth: int = 1) -> None:
        super().__init__()
        self.stem = ConvAct(12, base, 3)
        self.dark2 = nn.Sequential(DWConv(base, base * 2, 3, 2), CSPLayer(base * 2, base * 2, depth))
        self.dark3 = nn.Sequential(DWConv(base * 2, base * 4, 3, 2), CSPLayer(base * 4, base * 4, depth * 3))
        self.dark4 = nn.Sequential(DWConv(base * 4, base * 8, 3, 2), CSPLayer(base * 8, base * 8, depth * 3))
        self.dark5 = nn.Sequential(DWConv(base * 8, base * 16, 3, 2), SPP(base * 16, base * 16),
                                   CSPLayer(base * 16, base * 16, depth, shortcut=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Focus: space-to-depth, in the order of the original (top-left, bottom-left, top-right, bottom-right)
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        return c3, c4, self.dark5(c4)


class PAFPN(nn.Module):
    def __init__(self, c3: int = 64, c4: int = 128, c5: int = 256) -> None:
        super().__init__()
        self.lateral_conv0 = ConvAct(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, 1, shortcut=False)
        self.reduce_conv1 = ConvAct(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, 1, shortcut=False)
        self.bu_conv2 = DWConv(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, 1, shortcut=False)
        self.bu_conv1 = DWConv(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, 1, shortcut=False)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        x2, x1, x0 = feats
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat((F.interpolate(fpn_out0, scale_factor=2.0, mode="nearest"), x1), dim=1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat((F.interpolate(fpn_out1, scale_factor=2.0, mode="nearest"), x2), dim=1))
        pan_out1 = self.C3_n3(torch.cat((self.bu_conv2(pan_out2), fpn_out1), dim=1))
        pan_out0 = self.C3_n4(torch.cat((self.bu_conv1(pan_out1), fpn_out0), dim=1))
        return [pan_out2, pan_out1, pan_out0]


class Head(nn.Module):
    """Decoupled head: per level a 1x1 stem, then a classification and a regression branch."""

    def __init__(self, num_classes: int, in_channels: Sequence[int] = (64, 128, 256), width: int = 64) -> None:
        super().__init__()
        self.stems = nn.ModuleList(ConvAct(c, width, 1) for c in in_channels)
        self.cls_convs = nn.ModuleList(nn.Sequential(DWConv(width, width), DWConv(width, width)) for _ in in_channels)
        self.reg_convs = nn.ModuleList(nn.Sequential(DWConv(width, width), DWConv(width, width)) for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(width, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in in_channels)
        prior = -math.log((1 - 0.01) / 0.01)  # YOLOX's start: every anchor 1 % object, 1 % each class
        for pred in (*self.cls_preds, *self.obj_preds):
            nn.init.constant_(pred.bias, prior)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per level ``(B, 5 + C, h, w)``: box offsets and log sizes, objectness logit, class logits."""
        outs = []
        for k, x in enumerate(feats):
            x = self.stems[k](x)
            cls = self.cls_preds[k](self.cls_convs[k](x))  # this order of ops is the export's conv order
            reg_feat = self.reg_convs[k](x)
            outs.append(torch.cat((self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), cls), dim=1))
        return outs


def make_grid(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points of a ``h x w`` input: ``grid (N, 2)`` cell x, y and ``strides (N,)``, levels in order."""
    grids, strides = [], []
    for s in STRIDES:
        gy, gx = torch.meshgrid(torch.arange(h // s, device=device), torch.arange(w // s, device=device),
                                indexing="ij")
        grids.append(torch.stack((gx, gy), dim=-1).reshape(-1, 2))
        strides.append(torch.full((grids[-1].shape[0],), float(s), device=device))
    return torch.cat(grids).float(), torch.cat(strides)


class YoloxNano(nn.Module):
    """YOLOX-nano for ``num_classes`` classes (0.90 M parameters at 80 classes, 0.88 M at 3).

    Attributes:
        class_names: the class table written into exports and checkpoints.
    """

    def __init__(self, class_names: Sequence[str] = ("person", "bicycle", "car")) -> None:
        super().__init__()
        self.class_names = tuple(class_names)
        self.backbone = Backbone()
        self.neck = PAFPN()
        self.head = Head(len(self.class_names))
        with torch.no_grad():  # random init for [0, 1] inputs: the stem sees 0-255 (pretrained weights replace it)
            self.backbone.stem.conv.weight.div_(255.0)
        self._grids: dict[tuple[int, int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Undecoded predictions ``(B, N, 5 + C)``: ``dx, dy, log w, log h`` in stride units, then logits.

        Args:
            x: ``(B, 3, H, W)`` float RGB in [0, 1], H and W multiples of 32.
        """
        x = x.flip(1) * 255.0  # RGB [0, 1] -> the BGR 0-255 the COCO weights were trained on
        outs = self.head(self.neck(self.backbone(x)))
        return torch.cat([o.flatten(2) for o in outs], dim=2).transpose(1, 2)

    def grid(self, h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`make_grid` for this input size as ``dtype`` on ``device``, made once (not per frame)."""
        key = (h, w, torch.device(device), dtype)
        if key not in self._grids:
            grid, strides = make_grid(h, w, key[2])
            self._grids[key] = grid.to(dtype), strides.to(dtype)
        return self._grids[key]

    def decode(self, raw: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """:meth:`raw` output -> ``(B, N, 5 + C)`` boxes ``cx, cy, w, h`` in pixels and sigmoid scores."""
        grid, strides = self.grid(h, w, raw.device, raw.dtype)
        s = strides[:, None]
        xy = (raw[..., :2] + grid) * s
        wh = raw[..., 2:4].clamp(max=12.0).exp() * s
        return torch.cat((xy, wh, raw[..., 4:].sigmoid()), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, N, 5 + C)`` decoded rows (the ``yolov5`` layout)."""
        return self.decode(self.raw(x), x.shape[-2], x.shape[-1])


def _conv_layers(module: nn.Module, h: int = 64, w: int = 64) -> list[nn.Conv2d]:
    """The convolutions of ``module`` in the order a forward pass runs them."""
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda m, _i, _o: order.append(m)) for m in module.modules()
             if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module.raw(torch.zeros(1, 3, h, w))  # type: ignore[operator]
    finally:
        for hook in hooks:
            hook.remove()
    return order


def load_onnx_weights(net: YoloxNano, path: str | Path, class_ids: Sequence[int] | None = None) -> YoloxNano:
    """Copy the weights of a YOLOX-nano ONNX export (batch norm folded, e.g. the public COCO ``yolox_nano.onnx``)
    into ``net``, convolution by convolution in execution order; every shape must match.

    Args:
        class_ids: which of the export's class channels become ``net``'s classes, in order (default: the first
            ``net.num_classes``; COCO's 0, 1, 2 are person, bicycle, car).

    Raises:
        ModelError: the file is not an ONNX model, or its convolutions do not match YOLOX-nano's.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelError(f"reading {path} needs the onnx package: pip install onnx") from None

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as err:
        raise ModelError(f"cannot read {path} as an ONNX model: {err}") from None
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:  # exporters store repeated tensors once, behind Identity or Constant nodes
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    convs = [(inits.get(n.input[1]), inits.get(n.input[2]) if len(n.input) > 2 else None)
             for n in model.graph.node if n.op_type == "Conv"]
    layers = _conv_layers(net)
    if len(convs) != len(layers):
        raise ModelError(f"{path}: {len(convs)} convolutions, YOLOX-nano has {len(layers)}; not a YOLOX-nano export")
    ids = list(class_ids) if class_ids is not None else list(range(net.num_classes))
    if any(i < 0 for i in ids):
        raise ModelError(f"class ids must be >= 0, got {ids}")
    cls_preds = {id(m) for m in net.head.cls_preds}
    with torch.no_grad():
        for k, ((weight, bias), layer) in enumerate(zip(convs, layers, strict=True)):
            if weight is None or bias is None:
                raise ModelError(f"{path}: convolution {k} has no constant weight and bias")
            wt, bt = torch.from_numpy(weight.copy()), torch.from_numpy(bias.copy())
            if id(layer) in cls_preds:
                if max(ids) >= wt.shape[0]:
                    raise ModelError(f"{path}: class id {max(ids)} is outside the export's {wt.shape[0]} classes")
                wt, bt = wt[ids], bt[ids]
            if wt.shape != layer.weight.shape or bt.shape != layer.bias.shape:
                raise ModelError(f"{path}: convolution {k} has weight {list(wt.shape)}, YOLOX-nano expects "
                                 f"{list(layer.weight.shape)}; not a YOLOX-nano export")
            layer.weight.copy_(wt)
            layer.bias.copy_(bt)
    return net
