"""AMFusion (Beyond Night Visibility, arXiv 2403.01083), built from the paper's method (no official code).

Inputs are luminance only; all tensors are ``(B, C, H, W)`` float in [0, 1] with ``H`` and ``W`` multiples of
:attr:`AMFusion.multiple` (:class:`~ivfusion_ros.fusion.learned.LearnedFuser` pads and crops)::

    ir, vis  (B, 1, H, W)          thermal and visible Y
    illum    (B, 1, H, W)          local illumination of the visible image (FusionContext.maps_at)
    glare    (B, 1, H, W)          soft glare weight (light effects: headlights, floodlights)

Architecture (``c0, c1, c2 = channels``):

* **Pixel unshuffle** first: each source becomes 4 channels at half resolution (lossless, every full-resolution
  pixel is kept). On a CPU the cost of a convolution is dominated by the pixels it touches, so no
  convolution runs at full resolution; the output comes back to full resolution by pixel shuffle. This is
  what makes the real-time size run at camera rate on two cores.
* **Encoders**, one per modality: *spatial* features at 1/2 (``c0``) and 1/4 resolution (``c1``), which
  carry detail and illumination, and *semantic* features at 1/8 resolution (``c2``, residual blocks),
  which carry what detection needs.
* **IDFM** (illumination-guided detail fusion) at 1/2 and 1/4 resolution: a spatial attention map
  ``w_ir = sigmoid(content([mean_c, max_c of both features]) + softplus(a) (tau - illum) + softplus(b) glare)``
  mixes ``w_ir F_ir + (1 - w_ir) F_vis``. The illumination prior is additive and monotone by construction
  (``softplus`` keeps both gains positive, the content branch does not see the maps), so for the same
  features a darker region always gives thermal more weight and glare always does, before and after
  training; the content branch decides where the sources' own structure should win.
* **DSFM** (detection-guided semantic fusion) at 1/8 resolution: cross-attention whose queries are the
  concatenated semantic features and whose keys/values are features of a pretrained detection backbone, as in
  the paper: :class:`DetectorGuide`, the stride-8 part of the package's YOLOX-nano detector (64 channels,
  frozen), run on both sources (batched) and averaged. Without a backbone the keys/values are the semantic
  features themselves (self-guidance, the paper's ablation; the shipped ``amfusion-s`` weights are
  self-guided; :attr:`AMFusion.guidance` says which). Keys/values are average-pooled by ``kv_pool`` so
  attention is linear in the pixels.
* **Decoder**: U-Net style upsampling of the fused semantic features with the fused spatial features as
  skips; the head predicts a residual (4 channels, pixel-shuffled to full resolution) on the full-resolution
  IDFM mix ``w_ir ir + (1 - w_ir) vis`` (``w_ir`` of the 1/2-resolution IDFM, upsampled). The head starts at
  zero, so an untrained network is exactly the illumination-guided mix. Output clamped to [0, 1].

**Detector guidance** is chosen when the network is built: ``create_net("amfusion-s", guide=detector)`` with a
:class:`~ivfusion_ros.detect.nets.yolox.YoloxNano` (e.g. from
:func:`~ivfusion_ros.detect.ivdet.load_detector_weights`; ``ivfusion train --guide-detector PATH``) copies that
detector's stride-8 backbone into the network as :attr:`AMFusion.det_guide`. The backbone is an ordinary, frozen
part of the architecture: its weights are in the state dict, so the fusion weights file is self-contained, and
its config records ``guide: "yolox-nano"`` and ``guide_channels: 64``, so :func:`create_net` rebuilds it (with
placeholder weights, which the weights file then replaces) and inference never needs the detector file. The
guided network runs at inference what it ran in training (a fusion network trained with guidance cannot drop
it: DSFM's keys come from it). It is exported to ONNX like the self-guided one (the backbone is plain
convolutions).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.detect.nets.yolox import Backbone, YoloxNano
from ivfusion_ros.fusion.nets.registry import identify, register_net

__all__ = ["DSFM", "GUIDES", "IDFM", "AMFusion", "DetectorGuide", "amfusion", "amfusion_s"]

#: Detection backbones DSFM can attend to: config name -> channels of its features at 1/8 resolution.
GUIDES = {"yolox-nano": 64}


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(0.1, inplace=True))


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (the semantic branch's depth without vanishing gradients)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.body(x), 0.1)


class Encoder(nn.Module):
    """One modality (pixel-unshuffled, 4 channels at 1/2 resolution): spatial features at 1/2 and 1/4
    resolution and semantic features at 1/8 resolution."""

    def __init__(self, channels: tuple[int, int, int], semantic_blocks: int) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.spatial0 = _conv(4, c0)  # one layer: the most expensive resolution
        self.spatial1 = nn.Sequential(_conv(c0, c1, stride=2), _conv(c1, c1))
        self.semantic = nn.Sequential(_conv(c1, c2, stride=2), *[ResBlock(c2) for _ in range(semantic_blocks)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f0 = self.spatial0(x)
        f1 = self.spatial1(f0)
        return f0, f1, self.semantic(f1)


class IDFM(nn.Module):
    """Illumination-guided detail fusion: a spatial attention map mixes IR and visible spatial features.

    ``forward(f_ir, f_vis, illum, glare) -> (fused (B, C, H, W), w_ir (B, 1, H, W) in [0, 1])``.
    ``w_ir = sigmoid(content(stats) + softplus(a) (tau - illum) + softplus(b) glare)`` with ``a``, ``b``, ``tau``
    learnable. The content branch sees only channel statistics of the two features, never the maps, so the
    illumination prior stays monotone: lower ``illum`` or higher ``glare`` can only raise the thermal weight.
    """

    def __init__(self, hidden: int = 8, dark_gain: float = 4.0, glare_gain: float = 4.0, tau: float = 0.35) -> None:
        super().__init__()
        self.content = nn.Sequential(nn.Conv2d(4, hidden, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
                                     nn.Conv2d(hidden, 1, 3, 1, 1))
        self.a = nn.Parameter(torch.tensor(_inv_softplus(dark_gain)))
        self.b = nn.Parameter(torch.tensor(_inv_softplus(glare_gain)))
        self.tau = nn.Parameter(torch.tensor(tau))

    def prior(self, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        """The illumination logit: positive (thermal) where dark or glaring, negative where well lit."""
        return F.softplus(self.a) * (self.tau - illum) + F.softplus(self.b) * glare

    def attention(self, f_ir: torch.Tensor, f_vis: torch.Tensor, illum: torch.Tensor,
                  glare: torch.Tensor) -> torch.Tensor:
        stats = torch.cat((f_ir.mean(1, keepdim=True), f_ir.amax(1, keepdim=True), f_vis.mean(1, keepdim=True),
                           f_vis.amax(1, keepdim=True)), dim=1)
        return torch.sigmoid(self.content(stats) + self.prior(illum, glare))

    def forward(self, f_ir: torch.Tensor, f_vis: torch.Tensor, illum: torch.Tensor,
                glare: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.attention(f_ir, f_vis, illum, glare)
        return f_vis + w * (f_ir - f_vis), w


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention of ``q (B, C, H, W)`` over ``k, v (B, C, h, w)``; returns ``(B, C, H, W)``."""
    b, c = q.shape[0], q.shape[1]
    d = c // heads
    qs = q.reshape(b, heads, d, -1).transpose(-1, -2)  # B, heads, N, d
    ks = k.reshape(b, heads, d, -1)  # B, heads, d, M
    vs = v.reshape(b, heads, d, -1).transpose(-1, -2)  # B, heads, M, d
    att = torch.softmax(torch.matmul(qs, ks) * (d**-0.5), dim=-1)
    return torch.matmul(att, vs).transpose(-1, -2).reshape(q.shape)


class DSFM(nn.Module):
    """Detection-guided semantic fusion: cross-attention of semantic features over detector features.

    ``forward(s_ir, s_vis, guide_feats=None) -> (B, C, h, w)``. ``guide_feats`` ``(B, guide_channels, h, w)``
    are the detection backbone's features at the semantic resolution; a DSFM built without guide channels uses
    the semantic features themselves (self-guidance). Keys and values are pooled with ``ceil_mode`` so inputs
    smaller than ``kv_pool`` still give one key.
    """

    def __init__(self, c: int, heads: int, kv_pool: int, guide_channels: int = 0, guide_scale: int = 1) -> None:
        super().__init__()
        if c % heads:
            raise ValueError(f"DSFM: channels {c} not divisible by heads {heads}")
        self.heads, self.kv_pool = heads, kv_pool
        #: pooling of the guide's features: they come at 1/(8 guide_scale), the keys stay on the same 1/(8 kv_pool) grid
        self.guide_pool = max(1, kv_pool // guide_scale)
        self.mix = nn.Conv2d(2 * c, c, 1)
        self.q = nn.Conv2d(2 * c, c, 1)
        self.kv = nn.Conv2d(guide_channels if guide_channels else 2 * c, 2 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.ffn = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(2 * c, c, 1))
        self.guided = guide_channels > 0

    def forward(self, s_ir: torch.Tensor, s_vis: torch.Tensor, guide_feats: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat((s_ir, s_vis), dim=1)
        if self.guided and guide_feats is None:
            raise ValueError("DSFM was built for detector guidance but got no detector features")
        src = guide_feats if self.guided else x
        pool = self.guide_pool if self.guided else self.kv_pool
        if pool > 1:
            src = F.avg_pool2d(src, pool, ceil_mode=True)
        k, v = self.kv(src).chunk(2, dim=1)
        y = self.mix(x) + self.proj(_attend(self.q(x), k, v, self.heads))
        return y + self.ffn(y)


class DetectorGuide(nn.Module):
    """The stride-8 part of a YOLOX-nano backbone (Focus stem, ``dark2``, ``dark3``), frozen, as DSFM's guide.

    ``forward(x (B, 3, H, W) RGB in [0, 1]) -> (B, 64, H/8, W/8)``: exactly the first output of
    ``YoloxNano.backbone`` on the detector's own input convention (``x.flip(1) * 255``, BGR 0-255). Only these
    stages are kept: DSFM works at 1/8 resolution, and the deeper stages would be most of the detector's
    parameters and time for features DSFM does not use.

    It never trains: parameters have ``requires_grad`` off and :meth:`train` keeps it in eval mode. The weights
    are copied from ``detector`` (so fine-tuning that detector later, as the bilevel training does, leaves the
    guide as it was); without one they are placeholders for a state dict to replace.
    """

    arch = "yolox-nano"
    channels = GUIDES["yolox-nano"]

    def __init__(self, detector: YoloxNano | None = None) -> None:
        super().__init__()
        backbone = Backbone()  # the detector's own stage definitions, so the guide cannot drift from them
        self.stem, self.dark2, self.dark3 = backbone.stem, backbone.dark2, backbone.dark3
        if detector is not None:
            src = detector.backbone
            for name in ("stem", "dark2", "dark3"):
                getattr(self, name).load_state_dict(getattr(src, name).state_dict())
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> DetectorGuide:
        """Stay in eval mode whatever the parent does (the guide is a fixed feature extractor)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flip(1) * 255.0  # RGB [0, 1] -> the BGR 0-255 the detector was trained on (YoloxNano.raw)
        # Focus space-to-depth, in the order of yolox.Backbone.forward
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1)
        return self.dark3(self.dark2(self.stem(x)))


class AMFusion(nn.Module):
    """The AMFusion network; see the module docstring. ``forward(ir, vis, illum, glare) -> fused Y``.

    Args:
        guide_channels: 0, or the guide's channels (recorded in the config for the weights file).
        guide: ``""`` (self-guided DSFM), or ``"yolox-nano"`` for a :class:`DetectorGuide` with placeholder
            weights (what :func:`create_net` does when it rebuilds a network from a weights file's config), or
            the :class:`DetectorGuide` itself (built from a detector; the registry's builder makes it from a
            ``YoloxNano`` passed as ``guide``).

    Registry attributes (set by :func:`_create_amfusion`): ``variant``, ``family``, ``config``.
    """

    variant: str
    family: str
    config: dict[str, Any]

    def __init__(self, channels: tuple[int, int, int] = (8, 16, 32), semantic_blocks: int = 1, heads: int = 2,
                 kv_pool: int = 8, idfm_hidden: int = 8, guide_channels: int = 0,
                 guide: str | DetectorGuide = "", guide_scale: int = 1) -> None:
        super().__init__()
        c0, c1, c2 = channels
        if guide_scale not in (1, 2, 4):
            raise ValueError(f"AMFusion: guide_scale must be 1, 2 or 4, got {guide_scale}")
        if isinstance(guide, str):
            if guide and guide not in GUIDES:
                raise ValueError(f"AMFusion: unknown guide {guide!r} (known: {', '.join(GUIDES)})")
            guide = DetectorGuide() if guide else ""
        if not isinstance(guide, (str, DetectorGuide)):
            raise ValueError(f"AMFusion: guide must be a detector guide or its name, got {type(guide).__name__}")
        want = guide.channels if isinstance(guide, DetectorGuide) else 0
        if guide_channels not in (0, want):
            raise ValueError(f"AMFusion: guide_channels {guide_channels} does not fit the guide "
                             f"({want or 'none'})")
        self.enc_ir = Encoder(channels, semantic_blocks)
        self.enc_vis = Encoder(channels, semantic_blocks)
        self.idfm0 = IDFM(idfm_hidden)
        self.idfm1 = IDFM(idfm_hidden)
        self.dsfm = DSFM(c2, heads, kv_pool, want, guide_scale)
        #: the guide sees the sources downsampled by this: DSFM pools its features to 1/64 anyway, and at full
        #: resolution the backbone would cost more than the rest of amfusion-s (0.56 of 1.40 GMAC at 640x480)
        self.guide_scale = guide_scale
        #: the frozen detection backbone DSFM attends to, or None (self-guided)
        self.det_guide: DetectorGuide | None = guide if isinstance(guide, DetectorGuide) else None
        self.dec1 = nn.Sequential(_conv(c2 + c1, c1), _conv(c1, c1))
        self.dec0 = _conv(c1 + c0, c0)
        self.head = nn.Conv2d(c0, 4, 3, 1, 1)  # 4 = 2x2 full-resolution pixels per half-resolution pixel
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        #: input height and width must be multiples of this (pixel unshuffle, then two stride-2 stages)
        self.multiple = 8

    @property
    def guidance(self) -> str:
        """``"detector-guided"`` with a detection backbone, ``"self-guided"`` without (DSFM's fallback)."""
        return "detector-guided" if self.det_guide is not None else "self-guided"

    def guide_features(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """DSFM's keys/values source: the mean of the guide's features of both sources, ``(B, 64, H/8s, W/8s)`` with
        ``s = guide_scale``.

        Both sources go through the backbone in one batch (grey, as three equal channels: the detector was
        fine-tuned on thermal images that way).
        """
        assert self.det_guide is not None
        b = ir.shape[0]
        x = torch.cat((ir, vis), dim=0)
        if self.guide_scale > 1:
            x = F.avg_pool2d(x, self.guide_scale, ceil_mode=True)
        f = self.det_guide(x.expand(-1, 3, -1, -1))
        return 0.5 * (f[:b] + f[b:])

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        i0, i1, i2 = self.enc_ir(F.pixel_unshuffle(ir, 2))
        v0, v1, v2 = self.enc_vis(F.pixel_unshuffle(vis, 2))
        illum1, glare1 = F.avg_pool2d(illum, 2), F.avg_pool2d(glare, 2)
        f0, w0 = self.idfm0(i0, v0, illum1, glare1)
        f1, _ = self.idfm1(i1, v1, F.avg_pool2d(illum1, 2), F.avg_pool2d(glare1, 2))
        g = self.guide_features(ir, vis) if self.det_guide is not None else None
        s = self.dsfm(i2, v2, g)
        return decode_residual(self, s, f1, f0, w0, ir, vis)


def decode_residual(net: nn.Module, s: torch.Tensor, f1: torch.Tensor, f0: torch.Tensor, w0: torch.Tensor,
                    ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """The U-Net decoder shared by AMFusion-style networks (``net.dec1``, ``net.dec0``, ``net.head``).

    Semantic features ``s`` (1/8) are upsampled through the skips ``f1`` (1/4) and ``f0`` (1/2); the head's
    residual (4 channels, pixel-shuffled to full resolution) is added to the source mix ``vis + w (ir - vis)``
    with ``w`` the 1/2-resolution fusion weight ``w0`` upsampled; clamped to [0, 1].
    """
    up = F.interpolate(s, scale_factor=2.0, mode="bilinear", align_corners=False)
    d1 = net.dec1(torch.cat((up, f1), dim=1))
    up = F.interpolate(d1, scale_factor=2.0, mode="bilinear", align_corners=False)
    d0 = net.dec0(torch.cat((up, f0), dim=1))
    w = F.interpolate(w0, scale_factor=2.0, mode="bilinear", align_corners=False)
    return (vis + w * (ir - vis) + F.pixel_shuffle(net.head(d0), 2)).clamp(0.0, 1.0)


def _create_amfusion(variant: str, config: dict[str, Any], overrides: dict[str, Any]) -> AMFusion:
    """Build and stamp an AMFusion; ``guide`` may be a name, a :class:`DetectorGuide` or a ``YoloxNano``.

    A guided network's config records the guide's name and channels (never the module), so the weights file
    rebuilds it; a self-guided one's config has no ``guide`` key, as before guidance existed (the shipped
    weights' config hash is unchanged).
    """
    cfg = {**config, **overrides}
    guide = cfg.pop("guide", None)
    guide_scale = int(cfg.pop("guide_scale", config.get("guide_scale", 1)))
    if guide is None:
        guide = ""
    elif isinstance(guide, YoloxNano):
        guide = DetectorGuide(guide)
    elif isinstance(guide, nn.Module) and not isinstance(guide, DetectorGuide):
        raise TypeError(f"guide must be a YoloxNano detector, a DetectorGuide or {sorted(GUIDES)}, "
                        f"got {type(guide).__name__}")
    cfg["channels"] = tuple(int(c) for c in cfg["channels"])
    if len(cfg["channels"]) != 3:
        raise TypeError(f"channels must be three numbers, got {cfg['channels']}")
    net = AMFusion(**cfg, guide=guide, guide_scale=guide_scale)
    if net.det_guide is not None:
        cfg["guide"], cfg["guide_channels"] = net.det_guide.arch, net.det_guide.channels
        cfg["guide_scale"] = guide_scale
    return identify(net, variant, "amfusion", cfg)


@register_net("amfusion", "AMFusion, real-time size (about 80 k parameters, no full-resolution convolution).")
def amfusion_s(**overrides: Any) -> AMFusion:
    # guided, the detector backbone sees half-resolution sources: 0.98 GMAC at 640x480 instead of 1.40
    return _create_amfusion("amfusion-s", dict(channels=(8, 16, 32), semantic_blocks=1, heads=2, kv_pool=8,
                                               idfm_hidden=8, guide_channels=0, guide_scale=2), overrides)


@register_net("amfusion", "AMFusion, paper size (wider features, deeper semantic branch; about 2.4 M parameters).")
def amfusion(**overrides: Any) -> AMFusion:
    return _create_amfusion("amfusion", dict(channels=(32, 64, 128), semantic_blocks=3, heads=4, kv_pool=4,
                                             idfm_hidden=16, guide_channels=0), overrides)
