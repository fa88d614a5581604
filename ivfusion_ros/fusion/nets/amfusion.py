"""AMFusion (Beyond Night Visibility, arXiv 2403.01083), built from the paper's method (no official code).

Inputs are luminance only; all tensors are ``(B, C, H, W)`` float in [0, 1] with ``H`` and ``W`` multiples of
:attr:`AMFusion.multiple` (:class:`~ivfusion_ros.fusion.learned.LearnedFuser` pads and crops)::

    ir, vis  (B, 1, H, W)          thermal and visible Y
    illum    (B, 1, H, W)          local illumination of the visible image (FusionContext.maps_at)
    glare    (B, 1, H, W)          soft glare weight (light effects: headlights, floodlights)

Architecture (``c0, c1, c2 = channels``):

* **Encoders**, one per modality: *spatial* features at full (``c0``) and half resolution (``c1``), which
  carry detail and illumination, and *semantic* features at quarter resolution (``c2``, residual blocks),
  which carry what detection needs.
* **IDFM** (illumination-guided detail fusion) at full and half resolution: a spatial attention map
  ``w_ir = sigmoid(content([mean_c, max_c of both features, illum, glare]) + softplus(a) (tau - illum)
  + softplus(b) glare)`` mixes ``w_ir F_ir + (1 - w_ir) F_vis``. The learnable prior makes dark regions take
  thermal detail, lit regions keep visible detail and glare give way to thermal structure (light effects are
  suppressed rather than amplified); the content branch sees the illumination and glare maps as guidance
  channels as well.
* **DSFM** (detection-guided semantic fusion) at quarter resolution: cross-attention whose queries are the
  concatenated semantic features and whose keys/values are features of a detection backbone (``guide``: a
  torch module mapping ``(B, 3, H, W)`` images to ``(B, guide_channels, h, w)`` features, run on both
  sources). Without a backbone the keys/values are the semantic features themselves (self-guidance, the
  paper's ablation). Keys/values are average-pooled by ``kv_pool`` so attention is linear in the pixels.
* **Decoder**: U-Net style upsampling of the fused semantic features with the fused spatial features as
  skips, predicting a residual on the full-resolution IDFM mix ``w_ir ir + (1 - w_ir) vis``; clamped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.fusion.nets.registry import register_net

__all__ = ["AMFusion", "DSFM", "IDFM", "amfusion", "amfusion_s"]


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(0.1, inplace=True))


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.body(x), 0.1)


class Encoder(nn.Module):
    """One modality: spatial features (full, half resolution) and semantic features (quarter resolution)."""

    def __init__(self, channels: tuple[int, int, int], semantic_blocks: int) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.spatial0 = nn.Sequential(_conv(1, c0), _conv(c0, c0))
        self.spatial1 = nn.Sequential(_conv(c0, c1, stride=2), _conv(c1, c1))
        self.semantic = nn.Sequential(_conv(c1, c2, stride=2), *[ResBlock(c2) for _ in range(semantic_blocks)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f0 = self.spatial0(x)
        f1 = self.spatial1(f0)
        return f0, f1, self.semantic(f1)


class IDFM(nn.Module):
    """Illumination-guided detail fusion: a spatial attention map mixes IR and visible spatial features.

    ``forward(f_ir, f_vis, illum, glare) -> (fused (B, C, H, W), w_ir (B, 1, H, W) in [0, 1])``.
    The prior ``softplus(a) (tau - illum) + softplus(b) glare`` (``a``, ``b``, ``tau`` learnable, ``a`` and ``b``
    kept positive) raises the thermal weight where the visible image is dark or glaring.
    """

    def __init__(self, hidden: int = 8, dark_gain: float = 4.0, glare_gain: float = 4.0, tau: float = 0.35) -> None:
        super().__init__()
        self.content = nn.Sequential(nn.Conv2d(6, hidden, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
                                     nn.Conv2d(hidden, 1, 3, 1, 1))
        self.a = nn.Parameter(torch.tensor(_inv_softplus(dark_gain)))
        self.b = nn.Parameter(torch.tensor(_inv_softplus(glare_gain)))
        self.tau = nn.Parameter(torch.tensor(tau))

    def attention(self, f_ir: torch.Tensor, f_vis: torch.Tensor, illum: torch.Tensor,
                  glare: torch.Tensor) -> torch.Tensor:
        stats = torch.cat((f_ir.mean(1, keepdim=True), f_ir.amax(1, keepdim=True), f_vis.mean(1, keepdim=True),
                           f_vis.amax(1, keepdim=True), illum, glare), dim=1)
        prior = F.softplus(self.a) * (self.tau - illum) + F.softplus(self.b) * glare
        return torch.sigmoid(self.content(stats) + prior)

    def forward(self, f_ir: torch.Tensor, f_vis: torch.Tensor, illum: torch.Tensor,
                glare: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.attention(f_ir, f_vis, illum, glare)
        return w * f_ir + (1.0 - w) * f_vis, w


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
    are the detection backbone's features at the semantic resolution; ``None`` means self-guidance.
    """

    def __init__(self, c: int, heads: int, kv_pool: int, guide_channels: int = 0) -> None:
        super().__init__()
        if c % heads:
            raise ValueError(f"DSFM: channels {c} not divisible by heads {heads}")
        self.heads, self.kv_pool = heads, kv_pool
        self.mix = nn.Conv2d(2 * c, c, 1)
        self.q = nn.Conv2d(2 * c, c, 1)
        self.kv = nn.Conv2d(guide_channels if guide_channels else 2 * c, 2 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.ffn = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(2 * c, c, 1))
        self.guided = guide_channels > 0

    def forward(self, s_ir: torch.Tensor, s_vis: torch.Tensor, guide_feats: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat((s_ir, s_vis), dim=1)
        src = guide_feats if self.guided else x
        if self.guided and guide_feats is None:
            raise ValueError("DSFM was built for detector guidance but got no detector features")
        k, v = self.kv(F.avg_pool2d(src, self.kv_pool)).chunk(2, dim=1)
        y = self.mix(x) + self.proj(_attend(self.q(x), k, v, self.heads))
        return y + self.ffn(y)


class AMFusion(nn.Module):
    """The AMFusion network; see the module docstring. ``forward(ir, vis, illum, glare) -> fused Y``."""

    def __init__(self, channels: tuple[int, int, int] = (8, 16, 32), semantic_blocks: int = 1, heads: int = 2,
                 kv_pool: int = 4, idfm_hidden: int = 8, guide_channels: int = 0,
                 guide: nn.Module | None = None) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.enc_ir = Encoder(channels, semantic_blocks)
        self.enc_vis = Encoder(channels, semantic_blocks)
        self.idfm0 = IDFM(idfm_hidden)
        self.idfm1 = IDFM(idfm_hidden)
        if (guide is None) != (guide_channels == 0):
            raise ValueError("AMFusion: give both guide and guide_channels, or neither")
        self.dsfm = DSFM(c2, heads, kv_pool, guide_channels)
        self.guide = guide
        self.dec1 = nn.Sequential(_conv(c2 + c1, c1), _conv(c1, c1))
        self.dec0 = nn.Sequential(_conv(c1 + c0, c0), _conv(c0, c0))
        self.head = nn.Conv2d(c0, 1, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        #: input height and width must be multiples of this (two stride-2 stages, then the key/value pooling)
        self.multiple = 4 * kv_pool

    @property
    def guidance(self) -> str:
        return "detector-guided" if self.guide is not None else "self-guided"

    def _guide_features(self, ir: torch.Tensor, vis: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        assert self.guide is not None
        feats = [self.guide(x.expand(-1, 3, -1, -1)) for x in (ir, vis)]
        feats = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats]
        return 0.5 * (feats[0] + feats[1])

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        i0, i1, i2 = self.enc_ir(ir)
        v0, v1, v2 = self.enc_vis(vis)
        f0, w0 = self.idfm0(i0, v0, illum, glare)
        f1, _ = self.idfm1(i1, v1, F.avg_pool2d(illum, 2), F.avg_pool2d(glare, 2))
        g = self._guide_features(ir, vis, tuple(i2.shape[-2:])) if self.guide is not None else None
        s = self.dsfm(i2, v2, g)
        up = F.interpolate(s, scale_factor=2.0, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat((up, f1), dim=1))
        up = F.interpolate(d1, scale_factor=2.0, mode="bilinear", align_corners=False)
        d0 = self.dec0(torch.cat((up, f0), dim=1))
        base = w0 * ir + (1.0 - w0) * vis
        return (base + self.head(d0)).clamp(0.0, 1.0)


def _create_amfusion(variant: str, config: dict[str, Any], overrides: dict[str, Any]) -> AMFusion:
    cfg = {**config, **overrides}
    guide = cfg.pop("guide", None)
    cfg["channels"] = tuple(cfg["channels"])
    net = AMFusion(**cfg, guide=guide)
    net.variant = variant
    net.family = "amfusion"
    net.config = {**cfg, "channels": list(cfg["channels"])}  # JSON-serialisable; rebuilds the architecture
    return net


@register_net("amfusion", "AMFusion, real-time size (81 k parameters).")
def amfusion_s(**overrides: Any) -> AMFusion:
    return _create_amfusion("amfusion-s", dict(channels=(8, 16, 32), semantic_blocks=1, heads=2, kv_pool=16,
                                               idfm_hidden=8, guide_channels=0), overrides)


@register_net("amfusion", "AMFusion, paper size (wider features, deeper semantic branch).")
def amfusion(**overrides: Any) -> AMFusion:
    return _create_amfusion("amfusion", dict(channels=(32, 64, 128), semantic_blocks=3, heads=4, kv_pool=8,
                                             idfm_hidden=16, guide_channels=0), overrides)
