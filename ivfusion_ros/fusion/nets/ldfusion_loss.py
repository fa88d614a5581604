"""LDFusion's language-driven loss: the fusion objective written as text and enforced in CLIP's embedding space.

There is no ground-truth fused image. Instead of a hand-made formula for what it should contain, LDFusion states
the objective in words and lets CLIP (a vision-language model whose image and text embeddings share one space)
measure it. With ``E_I`` the CLIP image encoder, ``E_T`` the text encoder, ``n(x) = x / |x|`` and the prompts
(:data:`PAPER_PROMPTS`, from the official release; replace them with ``prompts=``)

* ``T_v`` = "a visible gray image", ``T_i`` = "an infrared image",
* ``T_f`` = "a clear image with detailed background and salient objects",

the *embedded fusion model* says: going from the visible image to the fused image should move its embedding the
way the text moves from ``T_v`` to ``T_f``, and likewise from the infrared image. Terms (``F`` fused, ``I``
infrared, ``V`` visible; ``f = n(E_I(F))``, ``i = n(E_I(I))``, ``v = n(E_I(V))``, ``t_x = n(E_T(T_x))``;
``cos`` the cosine similarity; means over the batch):

* ``clip_direction`` (fusion-direction alignment, the paper's language-driven loss):
  ``0.5 (1 - cos(f - v, t_f - t_v)) + 0.5 (1 - cos(f - i, t_f - t_i))``.
  A *direction* rather than ``cos(f, t_f)``: CLIP's image and text embeddings live in different regions of the
  sphere (the modality gap), so pulling an image embedding towards a text embedding is ill-posed, while the
  change an edit makes is comparable across the two modalities (the idea behind directional CLIP losses).
* ``clip_patch``: the same alignment for random crops of ``F`` (crop side 0.5-0.8 of the image, resized to the
  CLIP input), ``f_p = n(E_I(crop(F)))`` against the whole sources' ``v`` and ``i``:
  ``mean_p s_p [0.5 (1 - cos(f_p - v, t_f - t_v)) + 0.5 (1 - cos(f_p - i, t_f - t_i))] / max(1, sum_p s_p)``,
  where ``s_p`` is 1 for crops whose visible and infrared content both have an 8-bit histogram entropy above
  ``patch_entropy`` bits (flat sky or road says nothing about detail). It asks every local region, not only the
  whole image, to look like the prompt.
* ``clip_similarity`` (regularisation: the direction alone is satisfied by images far from both sources):
  ``0.5 (1 - cos(f, v)) + 0.5 (1 - cos(f, i))``.
* ``clip_perceptual`` (regularisation of content; the official code uses VGG-19 features, which would need a
  second set of pretrained weights, so this uses the CLIP image encoder's own intermediate features ``phi_l``,
  read with forward hooks from the layers ``feature_layers``):
  ``mean_l |phi_l(F) - max(phi_l(I), phi_l(V))|^2 / (mean |max(phi_l(I), phi_l(V))|^2 + eps)``,
  the element-wise maximum keeping the stronger response of either source; dividing by the target's energy
  makes the term independent of each layer's scale (a VGG feature and a transformer token differ by orders of
  magnitude), so one weight fits every CLIP architecture.

Images enter CLIP as 3 equal channels, bilinearly resized to ``image_size`` (224 for CLIP) and normalised with
CLIP's mean and standard deviation; gradients flow through the frozen CLIP into the fusion network.

**Design.** The terms are image terms (:func:`~ivfusion_ros.fusion.nets.losses.register_term`) like the others, so
they are weighted, logged and selected with ``--loss`` as usual; the network publishes nothing. They need a CLIP
model, which only exists at training time: :class:`ClipGuide` bundles a CLIP-like model (anything with
``encode_image(x (B, 3, S, S)) -> (B, D)``; ``encode_text`` only when the prompts are encoded here) with the
text embeddings, and :func:`use_clip` makes one active for the duration of a training run (the trainer does this
when a ``clip_*`` term has a weight). A ``clip_*`` term called without an active guide raises the error that says
how to get one. The guide caches the embeddings of the last ``(I, V, F)`` it saw, so the four terms of one step
encode each image once. :func:`load_clip` builds the model with ``open_clip`` from the user's weights file;
``open_clip`` is imported only then (it imports torchvision, which this package does not need otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion.nets.losses import register_loss, register_term

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIP_TERMS",
    "LOSS_WEIGHTS",
    "PAPER_PROMPTS",
    "ClipGuide",
    "ClipLike",
    "active_clip",
    "clip_preprocess",
    "direction_loss",
    "load_clip",
    "patch_entropy",
    "similarity_loss",
    "use_clip",
    "uses_clip",
]

#: The official release's prompts: visible source, infrared source, and the fused image wanted.
PAPER_PROMPTS: dict[str, str] = {
    "visible": "a visible gray image",
    "infrared": "an infrared image",
    "fused": "a clear image with detailed background and salient objects",
}
#: CLIP's image normalisation (RGB mean and std of its training images).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Default weights: the official trainer's (direction 2, patch direction 10, similarity 6); the perceptual term is
#: normalised (see the module docstring) and weighted 1 instead of its VGG term's 10.
LOSS_WEIGHTS: dict[str, float] = {"clip_direction": 2.0, "clip_patch": 10.0, "clip_similarity": 6.0,
                                  "clip_perceptual": 1.0}
CLIP_TERMS = tuple(LOSS_WEIGHTS)
_NEEDS_CLIP = ("LDFusion training needs CLIP weights: pip install open_clip_torch and pass --clip-weights FILE "
               "(a local open_clip weights file; --clip-model NAME, default ViT-B-32), or train without the CLIP "
               "terms: --loss {terms},intensity=1,gradient=2,ssim=0.5")


class ClipLike(Protocol):
    """What the loss needs of CLIP: an image encoder (and a text encoder when prompts are encoded here)."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor: ...


def _unit(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def direction_loss(f: torch.Tensor, v: torch.Tensor, i: torch.Tensor, t_f: torch.Tensor, t_v: torch.Tensor,
                   t_i: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 (1 - cos(n(f) - n(v), n(t_f) - n(t_v))) + 0.5 (1 - cos(n(f) - n(i), n(t_f) - n(t_i)))``.

    ``f (N, D)`` fused embeddings; ``v``, ``i`` ``(N, D)`` or ``(1, D)`` source embeddings; ``t_*`` ``(D,)`` or
    ``(1, D)`` text embeddings. Everything is projected to the unit sphere first (CLIP compares directions).
    Mean over rows, or ``sum(weight * loss) / max(1, sum(weight))`` with a 0/1 ``weight (N,)``.
    Zero when the image moves exactly like the text; 2 when against it.
    """
    f, v, i = _unit(f), _unit(v), _unit(i)
    t_f, t_v, t_i = (_unit(t.reshape(1, -1)) for t in (t_f, t_v, t_i))
    loss = 0.5 * (1 - F.cosine_similarity(f - v, t_f - t_v, dim=-1)) \
        + 0.5 * (1 - F.cosine_similarity(f - i, t_f - t_i, dim=-1))
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def similarity_loss(f: torch.Tensor, v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``0.5 (1 - cos(f, v)) + 0.5 (1 - cos(f, i))``, mean over rows: stay close to both sources in CLIP space."""
    return (0.5 * (1 - F.cosine_similarity(f, v, dim=-1)) + 0.5 * (1 - F.cosine_similarity(f, i, dim=-1))).mean()


def clip_preprocess(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    """``(B, 1|3, H, W)`` in [0, 1] -> ``(B, 3, size, size)`` normalised as CLIP expects (bilinear resize)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def patch_entropy(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Entropy in bits of each image's 8-bit histogram, ``-sum_k p_k log2 p_k``; ``x (B, C, H, W)`` in [0, 1]."""
    q = (x.detach().clamp(0, 1) * (bins - 1)).round().long().flatten(1)
    counts = torch.zeros(q.shape[0], bins, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    p = counts / counts.sum(dim=1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(dim=1)


def _default_feature_layers(model: nn.Module) -> list[str]:
    """Three intermediate layers of an open_clip image encoder: transformer blocks at 1/4, 1/2, 3/4 depth (ViT) or
    ``layer1..3`` (ModifiedResNet)."""
    visual = getattr(model, "visual", None)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is not None:
        n = len(blocks)
        return [f"visual.transformer.resblocks.{k}" for k in sorted({max(0, n // 4 - 1), n // 2 - 1, 3 * n // 4 - 1})]
    if visual is not None and hasattr(visual, "layer3"):
        return ["visual.layer1", "visual.layer2", "visual.layer3"]
    return []


class ClipGuide(nn.Module):
    """A frozen CLIP-like model with the prompts' text embeddings; computes the ``clip_*`` terms.

    Args:
        model: ``encode_image(x) -> (B, D)`` (``encode_text(tokens) -> (B, D)`` when ``text`` is not given).
        text: precomputed text embeddings ``{"visible", "infrared", "fused": (D,)}``; else encoded from
            ``prompts`` with ``tokenizer`` and ``model.encode_text``.
        prompts: the three texts (default :data:`PAPER_PROMPTS`).
        tokenizer: ``tokenizer(list[str]) -> tokens`` for ``model.encode_text``.
        image_size: side of the CLIP input (224 for CLIP; tiny test models use less).
        patches: random crops per step for ``clip_patch``; ``patch_scale`` their side as a fraction of the image.
        patch_entropy: minimum entropy (bits) of both sources' crops for a crop to count (official: 6).
        feature_layers: names of ``model``'s submodules whose outputs are the perceptual features (default: three
            intermediate layers of an open_clip image encoder).
        seed: seed of the crop positions.
    """

    def __init__(self, model: nn.Module, text: Mapping[str, torch.Tensor] | None = None,
                 prompts: Mapping[str, str] | None = None, tokenizer: Callable[[list[str]], Any] | None = None,
                 image_size: int = 224, patches: int = 8, patch_scale: tuple[float, float] = (0.5, 0.8),
                 patch_entropy: float = 6.0, feature_layers: Sequence[str] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.prompts = dict(PAPER_PROMPTS if prompts is None else prompts)
        if set(self.prompts) != set(PAPER_PROMPTS):
            raise ModelError(f"CLIP prompts need exactly the keys {sorted(PAPER_PROMPTS)}, got {sorted(self.prompts)}")
        if text is None:
            text = self._encode_prompts(tokenizer)
        for key in PAPER_PROMPTS:
            if key not in text:
                raise ModelError(f"CLIP text embeddings lack {key!r}")
            self.register_buffer(f"t_{key}", _unit(text[key].detach().float().reshape(1, -1)))
        self.image_size, self.patches, self.patch_scale = int(image_size), int(patches), tuple(patch_scale)
        self.patch_entropy = float(patch_entropy)
        self.gen = torch.Generator().manual_seed(seed)
        layers = list(_default_feature_layers(model) if feature_layers is None else feature_layers)
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise ModelError(f"CLIP model has no layer(s) {missing} for the perceptual term")
        self.feature_layers = layers
        self._features: list[torch.Tensor] = []
        self._hooks = [modules[n].register_forward_hook(self._keep) for n in layers]
        self._cache: tuple[tuple[torch.Tensor, ...], dict[str, Any]] | None = None

    def _encode_prompts(self, tokenizer: Callable[[list[str]], Any] | None) -> dict[str, torch.Tensor]:
        if tokenizer is None or not hasattr(self.model, "encode_text"):
            raise ModelError("ClipGuide: give text embeddings, or a model with encode_text and a tokenizer")
        keys = list(PAPER_PROMPTS)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        tokens = tokenizer([self.prompts[k] for k in keys])
        tokens = tokens.to(device) if isinstance(tokens, torch.Tensor) else tokens
        with torch.no_grad():
            emb = self.model.encode_text(tokens).float()
        return dict(zip(keys, emb))

    def _keep(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        self._features.append(output[0] if isinstance(output, tuple) else output)

    def train(self, mode: bool = True) -> ClipGuide:
        super().train(mode)
        self.model.eval()  # frozen: its normalisation and dropout stay in inference mode
        return self

    def close(self) -> None:
        """Remove the forward hooks from the CLIP model."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def encode(self, x: torch.Tensor, features: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """CLIP embeddings ``(B, D)`` of ``(B, 1, H, W)`` images (and the hooked features when ``features``)."""
        self._features = []
        emb = self.model.encode_image(clip_preprocess(x, self.image_size)).float()
        feats, self._features = self._features, []
        return emb, (feats if features else [])

    def _crops(self, *images: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        """The same ``patches`` random square crops of each image, each resized to the CLIP input side."""
        h, w = images[0].shape[-2:]
        out: tuple[list[torch.Tensor], ...] = tuple([] for _ in images)
        lo, hi = self.patch_scale
        for _ in range(self.patches):
            u = torch.rand(3, generator=self.gen).tolist()
            side = max(1, round(min(h, w) * (lo + (hi - lo) * u[0])))
            y, x = int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1))
            for lst, img in zip(out, images):
                lst.append(img[..., y:y + side, x:x + side])
        return out

    def _embeddings(self, ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> dict[str, Any]:
        key = (ir, vis, fused)
        if self._cache is not None and all(a is b for a, b in zip(self._cache[0], key)):
            return self._cache[1]
        with torch.no_grad():
            (i, phi_i), (v, phi_v) = self.encode(ir, True), self.encode(vis, True)
        f, phi_f = self.encode(fused, True)
        out = {"f": f, "i": i, "v": v, "phi_f": phi_f, "phi_i": phi_i, "phi_v": phi_v}
        self._cache = (key, out)
        return out

    def direction(self, ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """``clip_direction`` of whole images (module docstring)."""
        e = self._embeddings(ir, vis, fused)
        return direction_loss(e["f"], e["v"], e["i"], self.t_fused, self.t_visible, self.t_infrared)

    def patch(self, ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """``clip_patch``: direction of random crops of ``F`` from the whole sources, informative crops only."""
        if self.patches < 1:
            return fused.new_zeros(())
        e = self._embeddings(ir, vis, fused)
        c_i, c_v, c_f = self._crops(ir, vis, fused)
        size = self.image_size
        f_p = torch.cat([self.encode(c, False)[0] for c in c_f])  # (patches * B, D), crop-major
        with torch.no_grad():
            small = [F.interpolate(c, size=(size, size), mode="bilinear", align_corners=False) for c in c_i + c_v]
            ent = patch_entropy(torch.cat(small))
            n = len(c_i) * ir.shape[0]
            keep = ((ent[:n] > self.patch_entropy) & (ent[n:] > self.patch_entropy)).float()
        reps = self.patches
        return direction_loss(f_p, e["v"].repeat(reps, 1), e["i"].repeat(reps, 1), self.t_fused, self.t_visible,
                              self.t_infrared, keep)

    def similarity(self, ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """``clip_similarity`` (module docstring)."""
        e = self._embeddings(ir, vis, fused)
        return similarity_loss(e["f"], e["v"], e["i"])

    def perceptual(self, ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """``clip_perceptual``: normalised squared error of ``F``'s CLIP features to the sources' maximum."""
        e = self._embeddings(ir, vis, fused)
        if not e["phi_f"]:
            raise ModelError("clip_perceptual: the CLIP guide has no feature layers (pass feature_layers=...)")
        terms = []
        for pf, pi, pv in zip(e["phi_f"], e["phi_i"], e["phi_v"]):
            target = torch.maximum(pi, pv).float()
            terms.append((pf.float() - target).pow(2).mean() / (target.pow(2).mean() + 1e-6))
        return torch.stack(terms).mean()


_ACTIVE: list[ClipGuide] = []


def active_clip() -> ClipGuide:
    """The guide set by :func:`use_clip`; without one, the error that says how to train LDFusion."""
    if not _ACTIVE:
        raise ModelError(_NEEDS_CLIP.format(terms="=0,".join(CLIP_TERMS) + "=0"))
    return _ACTIVE[-1]


@contextlib.contextmanager
def use_clip(guide: ClipGuide) -> Iterator[ClipGuide]:
    """Make ``guide`` the one the ``clip_*`` loss terms use inside the ``with`` block (nests; restored after)."""
    _ACTIVE.append(guide)
    try:
        yield guide
    finally:
        _ACTIVE.remove(guide)


def uses_clip(weights: Mapping[str, float]) -> bool:
    """Whether a loss with these term weights computes a ``clip_*`` term (one with a non-zero weight)."""
    return any(weights.get(t, 0.0) != 0 for t in CLIP_TERMS)


def load_clip(model_name: str, pretrained_path: str, device: torch.device | str = "cpu",
              prompts: Mapping[str, str] | None = None, **guide_kw: Any) -> ClipGuide:
    """A :class:`ClipGuide` around open_clip's ``model_name`` with the weights file ``pretrained_path``.

    Nothing is downloaded: the weights must be a local file (e.g. ``open_clip_pytorch_model.bin`` of
    ``ViT-B-32``, or OpenAI's ``ViT-B-32.pt``). ``open_clip`` is imported here and nowhere else.

    Raises:
        ModelError: open_clip missing, no or unreadable weights file.
    """
    needs = _NEEDS_CLIP.format(terms="=0,".join(CLIP_TERMS) + "=0")
    if not pretrained_path:
        raise ModelError(needs)
    path = Path(pretrained_path).expanduser()
    if not path.is_file():
        raise ModelError(f"CLIP weights not found: {path}. {needs}")
    try:
        import open_clip  # optional and heavy (it imports torchvision): only here
    except ImportError as err:
        raise ModelError(f"{needs} (open_clip cannot be imported: {err})") from None
    try:
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=str(path), device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as err:  # open_clip raises RuntimeError, KeyError, ... for a bad name or file
        raise ModelError(f"cannot load CLIP {model_name!r} from {path}: {type(err).__name__}: {err}") from None
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipGuide(model, prompts=prompts, tokenizer=tokenizer, image_size=int(size), **guide_kw).to(device)


register_term("clip_direction", lambda ir, vis, f, il, gl: active_clip().direction(ir, vis, f))
register_term("clip_patch", lambda ir, vis, f, il, gl: active_clip().patch(ir, vis, f))
register_term("clip_similarity", lambda ir, vis, f, il, gl: active_clip().similarity(ir, vis, f))
register_term("clip_perceptual", lambda ir, vis, f, il, gl: active_clip().perceptual(ir, vis, f))
register_loss("ldfusion", LOSS_WEIGHTS)
