"""Unsupervised fusion losses: there is no ground-truth fused image, so each term says what a good fusion keeps.

All images are ``(B, 1, H, W)`` luminance in [0, 1]; ``illum`` and ``glare`` are the illumination map and glare
weight of the visible image at full size (as :class:`~ivfusion_ros.fusion.base.FusionContext.maps_at` gives
them). Every term is a plain function (usable on its own in tests and notebooks); :func:`create_loss` combines
them with weights for one network family.

Terms (``F`` fused, ``I`` thermal, ``V`` visible, ``G`` glare weight, means over pixels):

* :func:`intensity_loss` ``mean((1 - G) |F - max(I, V)|)``: keep the brighter source's intensity (warm targets,
  lit surfaces). Glare is excluded on purpose: there ``max(I, V)`` is the saturated light effect itself,
  which AMFusion wants suppressed, not copied; the illumination term governs those pixels.
* :func:`gradient_loss` ``mean(| |grad F| - max(|grad I|, (1 - G) |grad V|) |)`` with Sobel gradients
  (``|grad| = |Gx| + |Gy|``): keep the stronger edge of either source at every pixel, except the edges of light
  effects (the rim of a headlight's bloom is the strongest visible edge of a night street, and copying it keeps
  the halo).
* :func:`ssim_loss` ``1 - (SSIM(F, I) + SSIM(F, V)) / 2``: keep the local structure of both sources.
* :func:`illumination_loss` (AMFusion's illumination loss): local mean intensity ``mu = avgpool_k(F)`` should lie
  in a normal-light band ``[lo, hi]``; ``mean((1 + G_k) (relu(lo - mu) + relu(mu - hi)))`` lifts dark
  regions, compresses over-exposed ones and weighs glare patches (``G_k = avgpool_k(G)``) up. A band instead of
  one target level keeps the scene's own contrast between normally lit regions.
* :func:`glare_loss` ``sum(G |F - I|) / sum(G)``: inside light effects the fused image follows the thermal
  image, so a headlight becomes the car's thermal shape instead of a blob. Normalised by the glare area (not
  by all pixels): otherwise a headlight covering 2 % of a crop would weigh 2 % of what it should, and the
  network would learn to keep the glare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.errors import ConfigError, ModelError

__all__ = [
    "AUX_TERMS",
    "LOSS_DEFAULTS",
    "TERMS",
    "FusionLoss",
    "create_loss",
    "glare_loss",
    "gradient_loss",
    "illumination_loss",
    "intensity_loss",
    "register_loss",
    "register_term",
    "sobel_magnitude",
    "ssim",
    "ssim_loss",
]

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def intensity_loss(ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor,
                   glare: torch.Tensor | None = None) -> torch.Tensor:
    """``mean((1 - G) |F - max(I, V)|)``; without ``glare`` ``G = 0`` (plain L1 to the max of the sources)."""
    diff = (fused - torch.maximum(ir, vis)).abs()
    if glare is not None:
        diff = diff * (1.0 - glare)
    return diff.mean()


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|Gx| + |Gy|`` of a ``(B, 1, H, W)`` image with 3x3 Sobel kernels and replicate padding (no border edges)."""
    kx = _SOBEL_X.to(x)
    k = torch.stack((kx, kx.t()))[:, None]  # (2, 1, 3, 3)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    return g.abs().sum(dim=1, keepdim=True)


def gradient_loss(ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor,
                  glare: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(| |grad F| - max(|grad I|, (1 - G) |grad V|) |)`` (Sobel); zero when F has the stronger edge
    everywhere. Without ``glare`` ``G = 0``."""
    g_vis = sobel_magnitude(vis)
    if glare is not None:
        g_vis = g_vis * (1.0 - glare)
    target = torch.maximum(sobel_magnitude(ir), g_vis)
    return (sobel_magnitude(fused) - target).abs().mean()


def glare_loss(ir: torch.Tensor, fused: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
    """``sum(G |F - I|) / max(sum(G), 1)``: in light effects, follow the thermal image (0 without glare)."""
    return (glare * (fused - ir).abs()).sum() / glare.sum().clamp(min=1.0)


def _gauss_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004; Gaussian window, K1 = 0.01, K2 = 0.03, L = 1, 'valid' region) of two images.

    The window shrinks to the image size for tiny inputs so the loss works on any crop.
    """
    window = min(window, x.shape[-1], x.shape[-2])
    g = _gauss_window(window, sigma, x)
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gx), gy)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def ssim_loss(ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """``1 - (SSIM(F, I) + SSIM(F, V)) / 2``: structure of both sources, each weighted equally."""
    return 1.0 - 0.5 * (ssim(fused, ir) + ssim(fused, vis))


def illumination_loss(fused: torch.Tensor, glare: torch.Tensor | None = None, patch: int = 16,
                      lo: float = 0.35, hi: float = 0.65) -> torch.Tensor:
    """AMFusion's illumination loss: ``mean((1 + G_k) (relu(lo - mu) + relu(mu - hi)))``, ``mu = avgpool_k(F)``.

    Unsupervised: it needs no reference, only the notion of normal light. Patches darker than ``lo`` are pushed
    up (low light), patches brighter than ``hi`` down (over-exposure, glare); patches in the band cost nothing, so
    the scene keeps its contrast. Glare patches count up to twice. ``patch`` shrinks to the image for tiny inputs.
    """
    k = max(1, min(patch, fused.shape[-1], fused.shape[-2]))
    mu = F.avg_pool2d(fused, k, ceil_mode=True)
    cost = F.relu(lo - mu) + F.relu(mu - hi)
    if glare is not None:
        cost = cost * (1.0 + F.avg_pool2d(glare, k, ceil_mode=True))
    return cost.mean()


#: A loss term computed from the images: ``term(ir, vis, fused, illum, glare) -> scalar tensor``.
Term = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Image loss terms by name; families pick theirs by giving them a weight (:func:`register_loss`).
TERMS: dict[str, Term] = {
    "intensity": lambda ir, vis, f, il, gl: intensity_loss(ir, vis, f, gl),
    "gradient": lambda ir, vis, f, il, gl: gradient_loss(ir, vis, f, gl),
    "ssim": lambda ir, vis, f, il, gl: ssim_loss(ir, vis, f),
    "illumination": lambda ir, vis, f, il, gl: illumination_loss(f, gl),
    "glare": lambda ir, vis, f, il, gl: glare_loss(ir, f, gl),
}

#: Default loss weights per network family (what the shipped weights were trained with).
LOSS_DEFAULTS: dict[str, dict[str, float]] = {
    "amfusion": {"intensity": 1.0, "gradient": 2.0, "ssim": 0.5, "illumination": 1.0, "glare": 1.0},
}
#: Terms a family's network computes itself during a training forward pass (codebook commitment,
#: reconstruction of the inputs, ...), published as ``net.aux_losses: dict[str, Tensor]``.
AUX_TERMS: dict[str, tuple[str, ...]] = {"amfusion": ()}


def register_term(name: str, term: Term) -> None:
    """Add an image loss term (e.g. a family's own perceptual term) under ``name``."""
    if name in TERMS:
        raise ValueError(f"loss term {name!r} registered twice")
    TERMS[name] = term


def register_loss(family: str, defaults: dict[str, float], aux: tuple[str, ...] = ()) -> None:
    """Declare the loss of network ``family``: default weights of image terms and of its network's aux terms."""
    unknown = set(defaults) - set(TERMS) - set(aux)
    if unknown:
        raise ValueError(f"{family}: unknown loss term(s) {sorted(unknown)}")
    LOSS_DEFAULTS[family] = dict(defaults)
    AUX_TERMS[family] = tuple(aux)


class FusionLoss(nn.Module):
    """Weighted sum of loss terms: ``loss(ir, vis, fused, illum, glare, aux) -> (total, {term: float})``.

    Image terms come from :data:`TERMS`; ``aux`` terms are computed by the network in its forward pass and
    weighted here like the others. Terms with weight 0 are not computed. The per-term floats are detached
    values for logging; :attr:`term_names` lists every term the loss can report, in a stable order.
    """

    def __init__(self, weights: dict[str, float], aux: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.weights = dict(weights)
        self.aux = tuple(aux)
        unknown = set(self.weights) - set(TERMS) - set(self.aux)
        if unknown:
            raise ConfigError(f"unknown loss term(s) {sorted(unknown)} "
                              f"(available: {', '.join([*TERMS, *self.aux])})")
        self.term_names = tuple(self.weights)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor, illum: torch.Tensor,
                glare: torch.Tensor, aux: dict[str, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        total = fused.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        aux = aux or {}
        # the terms are computed in float32 even under autocast: SSIM's variances lose too much in half precision
        f32 = [t.float() for t in (ir, vis, fused, illum, glare)]
        for name, w in self.weights.items():
            if w == 0:
                continue
            if name in self.aux:
                if name not in aux:
                    raise ModelError(f"loss term {name!r}: the network did not compute it (net.aux_losses has "
                                     f"{sorted(aux) or 'nothing'})")
                value = aux[name].float()
            else:
                value = TERMS[name](*f32)
            parts[name] = float(value.detach())
            total = total + w * value
        return total, parts


def create_loss(family: str, **weights: Any) -> FusionLoss:
    """The loss of network ``family`` with its default weights, ``weights`` replacing some (e.g. ``ssim=0``).

    Raises:
        ConfigError: unknown family or loss term.
    """
    if family not in LOSS_DEFAULTS:
        raise ConfigError(f"no loss defined for network family {family!r} (available: {', '.join(LOSS_DEFAULTS)})")
    return FusionLoss({**LOSS_DEFAULTS[family], **{k: float(v) for k, v in weights.items()}},
                      aux=AUX_TERMS.get(family, ()))
