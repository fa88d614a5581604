"""LDFusion (Infrared and visible Image Fusion with Language-driven Loss in CLIP Embedding Space, arXiv 2402.16267).

The paper's contribution is the *loss* (:mod:`ivfusion_ros.fusion.nets.ldfusion_loss`): the fusion objective is
written as text and enforced in CLIP's embedding space. The network follows the structure of the official
release (content encoders, style codes, an AdaIN decoder, in the manner of MUNIT-style translation networks),
re-implemented here from its description, with two deviations that serve deployment: explicit, stateless AdaIN
parameters (the official decoder assigns them as module attributes before each call, which is neither thread-safe
nor traceable) and resize-convolution upsampling instead of transposed 5x5 convolutions (exact output size for
any input that is a multiple of :attr:`LDFusion.multiple`, no crop, no checkerboard).

Inputs are luminance, ``(B, 1, H, W)`` float in [0, 1]; ``illum`` and ``glare`` are the illumination map and glare
weight of the visible image. LDFusion has no illumination prior: what to keep is decided by the language-driven loss
during training. The one place the maps enter is the style MLP, which gets their global means (how lit the scene
is, how much of it is glare) beside the two style codes: two numbers that the pipeline computes anyway and that
tell the decoder the scene's regime (deviation from the official network, which sees only the images; it also keeps
all four inputs in the exported ONNX graph, whose exporter drops unused inputs).

Architecture (``c = dim``, ``n = downsample``):

* **Content encoders**, one per modality: a convolution, then ``n`` stride-2 convolutions doubling the channels,
  then ``content_blocks`` residual blocks, each followed by instance normalisation (no affine). Instance
  normalisation removes each image's own contrast and brightness, so the content code holds *structure* (edges,
  shapes, textures) and not the modality's intensity statistics; those go to the style code.
  Content codes: ``(B, c 2^n, H / 2^n, W / 2^n)`` per source.
* **Style encoders**, one per modality: stride-2 convolutions without normalisation, global average pooling and a
  1x1 projection to ``style_dim`` numbers per image. A style code is a summary of the *global statistics* of a
  source (brightness, contrast, texture energy).
* **Decoder**: the two content codes are concatenated (and mixed by a 1x1 convolution to ``decoder_dim`` channels
  when that differs), then ``decoder_blocks`` residual blocks whose normalisation layers are AdaIN:
  ``AdaIN(x; m, s) = s (x - mu_c(x)) / sigma_c(x) + m`` with per-sample, per-channel mean ``mu_c`` and standard
  deviation ``sigma_c`` over the pixels, and ``(m, s)`` predicted by an MLP from the concatenated style codes
  and the global means of ``illum`` and ``glare`` (``s = softplus(.)`` > 0). The fused image's global
  statistics are thereby a learned function of both sources' styles, while the content codes carry its structure.
  ``n`` upsampling stages (nearest x2, 3x3 convolution halving the channels, layer normalisation over (C, H, W)
  with per-channel affine, ReLU) and an output convolution with a sigmoid give the fused luminance.
* **Real-time size** (``unshuffle=True``): both sources are pixel-unshuffled to 4 channels at half resolution
  first (lossless), the output convolution predicts 4 channels that are pixel-shuffled back. No convolution runs
  at full resolution, which is what makes ``ldfusion-s`` fast on a CPU (as in ``amfusion-s``).

:attr:`LDFusion.multiple` is ``2^n`` (``2^(n+1)`` with unshuffle). The graph has no control flow on tensor values
(normalisation statistics are reductions), so it exports to ONNX with dynamic batch, height and width.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.fusion.nets import ldfusion_loss  # noqa: F401  (registers the family's loss and CLIP terms)
from ivfusion_ros.fusion.nets.registry import identify, register_net

__all__ = ["AdaIN", "ContentEncoder", "LDFusion", "StyleEncoder", "adain", "instance_norm", "ldfusion", "ldfusion_s"]

_EPS = 1e-5


def instance_norm(x: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``(x - mu_c) / sqrt(var_c + eps)`` per sample and channel over the pixels.

    Written out instead of ``F.instance_norm``, which refuses a 1x1 feature map (a small input at 1/8 resolution);
    here such a map simply normalises to zero.
    """
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = (x - mu).pow(2).mean(dim=(2, 3), keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def adain(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """Adaptive instance normalisation: ``std (x - mu_c(x)) / sigma_c(x) + mean``.

    ``x (B, C, H, W)``; ``mean, std (B, C)``. Each output channel has mean ``mean`` and standard deviation
    ``std`` (up to ``eps``): the style sets the statistics, ``x`` only the spatial pattern.
    """
    return instance_norm(x, eps) * std[:, :, None, None] + mean[:, :, None, None]


class AdaIN(nn.Module):
    """:func:`adain` as a layer with ``num_features`` channels (its parameters come from the style MLP)."""

    def __init__(self, num_features: int, eps: float = _EPS) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps

    def forward(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return adain(x, mean, std, self.eps)


class _InstanceNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


class _ResBlock(nn.Module):
    """``x + IN(conv(ReLU(IN(conv(x)))))``: depth at the content resolution without losing the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), _InstanceNorm(), nn.ReLU(inplace=True), _conv(c, c), _InstanceNorm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _AdaINResBlock(nn.Module):
    """``x + AdaIN(conv(ReLU(AdaIN(conv(x); p1))); p2)``; needs ``2 * 2 * c`` style parameters per sample."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(c, c), _conv(c, c)
        self.norm1, self.norm2 = AdaIN(c), AdaIN(c)
        self.num_params = 4 * c

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        m1, s1, m2, s2 = params.chunk(4, dim=1)
        y = F.relu(self.norm1(self.conv1(x), m1, s1))
        return x + self.norm2(self.conv2(y), m2, s2)


class ContentEncoder(nn.Module):
    """One modality's structure: ``(B, cin, H, W) -> (B, dim 2^n, H / 2^n, W / 2^n)``, instance-normalised."""

    def __init__(self, cin: int, dim: int, downsample: int, blocks: int, first_kernel: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(cin, dim, first_kernel), _InstanceNorm(), nn.ReLU(inplace=True)]
        c = dim
        for _ in range(downsample):
            layers += [_conv(c, 2 * c, 3, 2), _InstanceNorm(), nn.ReLU(inplace=True)]
            c *= 2
        layers += [_ResBlock(c) for _ in range(blocks)]
        self.model = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class StyleEncoder(nn.Module):
    """One modality's global statistics: ``(B, cin, H, W) -> (B, style_dim)`` (convolutions, global mean, 1x1)."""

    def __init__(self, cin: int, dim: int, downsample: int, style_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(cin, dim, 3, 2), nn.ReLU(inplace=True)]
        c = dim
        for i in range(downsample):
            cout = 2 * c if i < 2 else c  # widen twice, then keep the width (cheap at low resolution)
            layers += [_conv(c, cout, 3, 2), nn.ReLU(inplace=True)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c, style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).mean(dim=(2, 3)))


class LDFusion(nn.Module):
    """The LDFusion network; see the module docstring. ``forward(ir, vis, illum, glare) -> fused Y``.

    Registry attributes (set by :func:`_create_ldfusion`): ``variant``, ``family``, ``config``.
    """

    variant: str
    family: str
    config: dict[str, Any]

    def __init__(self, dim: int = 16, downsample: int = 3, content_blocks: int = 2, style_dim: int = 8,
                 style_channels: int = 16, decoder_dim: int = 0, decoder_blocks: int = 2, mlp_hidden: int = 256,
                 first_kernel: int = 7, unshuffle: bool = False) -> None:
        super().__init__()
        if dim < 1 or downsample < 1 or style_dim < 1 or mlp_hidden < 1:
            raise ValueError("dim, downsample, style_dim and mlp_hidden must be positive")
        self.unshuffle = bool(unshuffle)
        cin = 4 if self.unshuffle else 1
        self.content_ir = ContentEncoder(cin, dim, downsample, content_blocks, first_kernel)
        self.content_vis = ContentEncoder(cin, dim, downsample, content_blocks, first_kernel)
        self.style_ir = StyleEncoder(cin, style_channels, downsample, style_dim)
        self.style_vis = StyleEncoder(cin, style_channels, downsample, style_dim)
        cc = 2 * self.content_ir.out_channels
        cd = decoder_dim or cc
        if cd >> downsample < 1:
            raise ValueError(f"decoder_dim {cd} cannot be halved {downsample} times")
        self.mix = nn.Conv2d(cc, cd, 1) if cd != cc else nn.Identity()
        self.blocks = nn.ModuleList(_AdaINResBlock(cd) for _ in range(decoder_blocks))
        n_params = sum(b.num_params for b in self.blocks)
        self.mlp = nn.Sequential(nn.Linear(2 * style_dim + 2, mlp_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(mlp_hidden, mlp_hidden), nn.ReLU(inplace=True),
                                 nn.Linear(mlp_hidden, max(n_params, 1)))
        up: list[nn.Module] = []
        c = cd
        for _ in range(downsample):
            up += [nn.Upsample(scale_factor=2.0, mode="nearest"), _conv(c, c // 2), nn.GroupNorm(1, c // 2),
                   nn.ReLU(inplace=True)]
            c //= 2
        self.up = nn.Sequential(*up)
        self.head = _conv(c, 4 if self.unshuffle else 1, 3 if self.unshuffle else first_kernel)
        #: input height and width must be multiples of this
        self.multiple = 2 ** (downsample + (1 if self.unshuffle else 0))
        self._init_style_scales()

    def _init_style_scales(self) -> None:
        """Start every AdaIN at unit scale and zero shift (``softplus(0.5413) = 1``): plain instance norm."""
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            last.bias.zero_()
            i = 0
            for b in self.blocks:
                c = b.num_params // 4
                for k in range(4):
                    if k % 2 == 1:  # the std chunks
                        last.bias[i + k * c:i + (k + 1) * c] = 0.5413
                i += b.num_params

    @property
    def guidance(self) -> str:
        """No guide network at inference: language guides only the training (through the loss)."""
        return "unguided"

    def style_params(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor,
                     glare: torch.Tensor) -> torch.Tensor:
        """AdaIN parameters ``(B, n)`` from the two style codes and the scene's mean illumination and glare;
        the std chunks pass through ``softplus`` (positive). Inputs as :meth:`forward` takes them."""
        if self.unshuffle:
            ir, vis = F.pixel_unshuffle(ir, 2), F.pixel_unshuffle(vis, 2)
        return self._style_params(ir, vis, illum, glare)

    def _style_params(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor,
                      glare: torch.Tensor) -> torch.Tensor:
        scene = torch.cat((illum.mean(dim=(2, 3)), glare.mean(dim=(2, 3))), dim=1)  # (B, 2)
        raw = self.mlp(torch.cat((self.style_vis(vis), self.style_ir(ir), scene), dim=1))
        out = []
        i = 0
        for b in self.blocks:
            c = b.num_params // 4
            m1, s1, m2, s2 = (raw[:, i + k * c:i + (k + 1) * c] for k in range(4))
            out += [m1, F.softplus(s1), m2, F.softplus(s2)]
            i += b.num_params
        return torch.cat(out, dim=1) if out else raw

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        if self.unshuffle:
            ir, vis = F.pixel_unshuffle(ir, 2), F.pixel_unshuffle(vis, 2)
        x = self.mix(torch.cat((self.content_vis(vis), self.content_ir(ir)), dim=1))
        params = self._style_params(ir, vis, illum, glare)
        i = 0
        for b in self.blocks:
            x = b(x, params[:, i:i + b.num_params])
            i += b.num_params
        y = torch.sigmoid(self.head(self.up(x)))
        return F.pixel_shuffle(y, 2) if self.unshuffle else y


def _create_ldfusion(variant: str, config: dict[str, Any], overrides: dict[str, Any]) -> LDFusion:
    cfg = {**config, **overrides}
    net = LDFusion(**cfg)
    return identify(net, variant, "ldfusion", cfg)


@register_net("ldfusion", "LDFusion, real-time size (half-resolution input by pixel unshuffle; ~100 k parameters).")
def ldfusion_s(**overrides: Any) -> LDFusion:
    return _create_ldfusion("ldfusion-s", dict(dim=8, downsample=2, content_blocks=1, style_dim=8, style_channels=8,
                                               decoder_dim=32, decoder_blocks=1, mlp_hidden=64, first_kernel=3,
                                               unshuffle=True), overrides)


@register_net("ldfusion", "LDFusion, size of the official release (content 16->128 channels at 1/8, decoder 256).")
def ldfusion(**overrides: Any) -> LDFusion:
    return _create_ldfusion("ldfusion", dict(dim=16, downsample=3, content_blocks=2, style_dim=8, style_channels=16,
                                             decoder_dim=0, decoder_blocks=2, mlp_hidden=256, first_kernel=7,
                                             unshuffle=False), overrides)
