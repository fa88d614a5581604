"""Text-to-Pixels (From Text to Pixels, arXiv 2401.00421), built from the paper's description (no official code).

Text prompts ("night street, highlight pedestrians") steer the fusion: their embeddings are keys and values of
a cross-attention over the semantic features and, pooled, give FiLM modulations of the fusion gates at every
level; a codebook quantises the fused semantic features. Inputs are luminance only; all tensors are
``(B, C, H, W)`` float in [0, 1] with ``H`` and ``W`` multiples of :attr:`T2P.multiple`
(:class:`~ivfusion_ros.fusion.learned.LearnedFuser` pads and crops)::

    ir, vis  (B, 1, H, W)          thermal and visible Y
    illum    (B, 1, H, W)          local illumination of the visible image
    glare    (B, 1, H, W)          soft glare weight of the visible image

Architecture (``c0, c1, c2 = channels``):

* **Prompt embeddings**, cached: the ``prompts`` of the config are encoded once when the network is created
  for training (:mod:`~ivfusion_ros.fusion.nets.text`: MiniLM, CLIP with the user's weights, or the built-in
  hashing encoder) and kept in the buffer ``text_emb (T, text_dim)``. Buffers are in the state dict, so the
  weights file carries them and the ONNX graph holds them as constants: inference never runs a text encoder.
  A linear projection and LayerNorm map them to ``T`` tokens of width ``c2``; their mean is the pooled prompt.
* **Pixel unshuffle** first (4 channels at 1/2 resolution, lossless): no convolution at full resolution, which
  keeps the real-time size within camera rate on two CPU cores.
* **Multi-level feature extractor**, one per modality: local detail at 1/2 (``c0``) and 1/4 (``c1``)
  resolution, context at 1/8 (``c2``, residual blocks).
* **Text-steered fusion gates** at 1/2 and 1/4 resolution (:class:`TextGate`): a spatial map
  ``w_ir = sigmoid(content(FiLM_text(conv(stats))) + softplus(a) (tau - illum) + softplus(b) glare)`` mixes
  ``w_ir F_ir + (1 - w_ir) F_vis``; ``stats`` are channel mean and max of both features. The prompt decides
  (through FiLM, ``h (1 + gamma) + beta`` with ``gamma, beta`` linear in the pooled prompt) which content wins;
  the illumination prior is additive and monotone as in AMFusion (darker or glaring -> more thermal).
* **Text-guided transformer** at 1/8 resolution (:class:`TextGuidedBlock`): self-attention of the fused semantic
  features over average-pooled keys/values of both modalities (cross-modal context, linear in pixels), then
  cross-attention whose keys and values are the prompt tokens plus a learned *null* token (a pixel the prompts
  do not concern can attend to nothing), then a feed-forward layer; all residual, then FiLM by the prompt.
* **Codebook** (:class:`VectorQuantizer`): the semantic features are replaced by their nearest code (argmin
  of squared distances; exported to ONNX as ArgMin + Gather). Training uses the straight-through estimator
  ``z + sg(q - z)``, EMA codebook updates (training mode only) and publishes the commitment loss
  ``mean((z - sg(q))^2)`` as ``aux_losses["commitment"]``. The discrete semantic space is the paper's way to
  make the features the detector relies on compact and stable.
* **Decoder**: U-Net upsampling of the quantised semantic features with the gated features as skips; the head
  predicts a residual (4 channels, pixel-shuffled to full resolution) on the full-resolution gate mix
  ``w_ir ir + (1 - w_ir) vis``. The head starts at zero: an untrained network is the text-steered gate mix.
  Output clamped to [0, 1].

The paper's bilevel optimisation with a detector is a training option (:mod:`ivfusion_ros.train.bilevel`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.fusion.nets.amfusion import ResBlock, _attend, _conv, decode_residual
from ivfusion_ros.fusion.nets.losses import register_loss
from ivfusion_ros.fusion.nets.registry import identify, register_net
from ivfusion_ros.fusion.nets.text import HashTextEncoder, TextEncoder, load_text_encoder

__all__ = ["DEFAULT_PROMPTS", "T2P", "TextCrossAttention", "TextGate", "TextGuidedBlock", "VectorQuantizer", "t2p",
           "t2p_s"]

#: What the shipped network is asked to do: a night street seen by a robot, people and vehicles first.
DEFAULT_PROMPTS = (
    "a night street seen by infrared and visible cameras, highlight pedestrians",
    "cars and cyclists in headlight glare, keep their thermal outline",
    "keep the colours and textures of the visible image where the scene is lit",
)


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


class FiLM(nn.Module):
    """Feature-wise linear modulation by the pooled prompt: ``x (1 + gamma) + beta``, ``(gamma, beta) = W p + b``."""

    def __init__(self, text_c: int, c: int) -> None:
        super().__init__()
        self.lin = nn.Linear(text_c, 2 * c)
        nn.init.normal_(self.lin.weight, std=0.1)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.lin(pooled).reshape(1, -1, 1, 1).chunk(2, dim=1)
        return x * (1.0 + gamma) + beta


class TextGate(nn.Module):
    """Text-steered spatial fusion gate; ``forward(f_ir, f_vis, illum, glare, pooled) -> (fused, w_ir)``.

    ``w_ir = sigmoid(content + softplus(a) (tau - illum) + softplus(b) glare)`` where ``content`` is a small
    convolution of the features' channel statistics whose hidden layer is FiLM-modulated by the pooled prompt.
    The prompt changes what counts as salient; the prior keeps "dark or glaring -> thermal" monotone.
    """

    def __init__(self, text_c: int, hidden: int = 8, dark_gain: float = 4.0, glare_gain: float = 4.0,
                 tau: float = 0.35) -> None:
        super().__init__()
        self.inp = nn.Conv2d(4, hidden, 3, 1, 1)
        self.film = FiLM(text_c, hidden)
        self.out = nn.Conv2d(hidden, 1, 3, 1, 1)
        self.a = nn.Parameter(torch.tensor(_inv_softplus(dark_gain)))
        self.b = nn.Parameter(torch.tensor(_inv_softplus(glare_gain)))
        self.tau = nn.Parameter(torch.tensor(tau))

    def forward(self, f_ir: torch.Tensor, f_vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor,
                pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = torch.cat((f_ir.mean(1, keepdim=True), f_ir.amax(1, keepdim=True), f_vis.mean(1, keepdim=True),
                           f_vis.amax(1, keepdim=True)), dim=1)
        content = self.out(F.leaky_relu(self.film(self.inp(stats), pooled), 0.1))
        prior = F.softplus(self.a) * (self.tau - illum) + F.softplus(self.b) * glare
        w = torch.sigmoid(content + prior)
        return f_vis + w * (f_ir - f_vis), w


class TextCrossAttention(nn.Module):
    """Pixels attend to prompt tokens: queries from the features, keys and values from the ``T`` tokens plus a
    learned null token; ``forward(x (B, C, H, W), tokens (T, C)) -> (B, C, H, W)``.

    Attention weights ``softmax(q k^T / sqrt(d))`` over the ``T + 1`` tokens sum to one at every pixel and head
    (:meth:`weights`); the tokens are the same for the whole batch (they are the network's prompts).
    """

    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        if c % heads:
            raise ValueError(f"TextCrossAttention: channels {c} not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Linear(c, c)
        self.v = nn.Linear(c, c)
        self.null = nn.Parameter(torch.zeros(1, c))
        self.proj = nn.Conv2d(c, c, 1)

    def _qkv(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c = x.shape[0], x.shape[1]
        d = c // self.heads
        kv_in = torch.cat((tokens, self.null), dim=0)  # (T + 1, C)
        q = self.q(x).reshape(b, self.heads, d, -1).transpose(-1, -2)  # B, heads, N, d
        k = self.k(kv_in).reshape(-1, self.heads, d).permute(1, 2, 0)  # heads, d, T + 1
        v = self.v(kv_in).reshape(-1, self.heads, d).permute(1, 0, 2)  # heads, T + 1, d
        return q, k, v

    def weights(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, heads, H*W, T + 1)`` attention weights of every pixel over the prompt tokens and the null token."""
        q, k, _ = self._qkv(x, tokens)
        return torch.softmax(torch.matmul(q, k) * (q.shape[-1] ** -0.5), dim=-1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, tokens)
        att = torch.softmax(torch.matmul(q, k) * (q.shape[-1] ** -0.5), dim=-1)
        return self.proj(torch.matmul(att, v).transpose(-1, -2).reshape(x.shape))


class TextGuidedBlock(nn.Module):
    """Self-attention (cross-modal context), text cross-attention, feed-forward, FiLM; all residual.

    ``forward(s_ir, s_vis, tokens, pooled) -> (B, C, h, w)``. The self-attention's keys and values are the
    concatenated modalities average-pooled by ``kv_pool`` (``ceil_mode``: small inputs still give one key).
    """

    def __init__(self, c: int, heads: int, kv_pool: int) -> None:
        super().__init__()
        if c % heads:
            raise ValueError(f"TextGuidedBlock: channels {c} not divisible by heads {heads}")
        self.heads, self.kv_pool = heads, kv_pool
        self.mix = nn.Conv2d(2 * c, c, 1)
        self.q = nn.Conv2d(c, c, 1)
        self.kv = nn.Conv2d(2 * c, 2 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.text = TextCrossAttention(c, heads)
        self.ffn = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.LeakyReLU(0.1, inplace=True), nn.Conv2d(2 * c, c, 1))
        self.film = FiLM(c, c)

    def forward(self, s_ir: torch.Tensor, s_vis: torch.Tensor, tokens: torch.Tensor,
                pooled: torch.Tensor) -> torch.Tensor:
        both = torch.cat((s_ir, s_vis), dim=1)
        x = self.mix(both)
        src = F.avg_pool2d(both, self.kv_pool, ceil_mode=True) if self.kv_pool > 1 else both
        k, v = self.kv(src).chunk(2, dim=1)
        x = x + self.proj(_attend(self.q(x), k, v, self.heads))
        x = x + self.text(x, tokens)
        x = x + self.ffn(x)
        return self.film(x, pooled)


#: Temperature of the soft code assignment of the usage loss, as a share of the mean squared distance (at 1 the
#: soft usage is near uniform even when one code takes every vector, and the loss does not see the collapse).
USAGE_TEMPERATURE = 0.05


class VectorQuantizer(nn.Module):
    """Codebook of ``num_codes`` vectors of width ``dim`` with EMA updates; ``forward(z) -> (q, indices)``.

    * Assignment: ``k* = argmin_k ||z - e_k||^2``, computed as ``||z||^2 - 2 z.e_k + ||e_k||^2`` with a 1x1
      convolution (exports to ONNX as Conv, ArgMin, Gather; no Python control flow on tensor values).
    * Straight-through estimator: the output is ``z + sg(e_k* - z)``, so the forward value is the code and the
      gradient passes to ``z`` unchanged.
    * Commitment loss (VQ-VAE): ``mean((z - sg(e_k*))^2)``, stored in :attr:`commitment` during training;
      it keeps the encoder's outputs close to the codes they pick.
    * EMA updates (training mode only, no gradient): with ``n_k`` the number of vectors assigned to code ``k``
      in the batch and ``s_k`` their sum, ``N_k <- d N_k + (1 - d) n_k``, ``m_k <- d m_k + (1 - d) s_k`` and,
      for codes used in the batch, ``e_k <- m_k / N_k``. Unused codes keep their vector exactly. The codebook
      is initialised from the first training batch's features (random distinct vectors), so codes start where
      the features are rather than at an arbitrary scale.
    * Dead-code restart (training only): a code whose EMA count fell below :attr:`DEAD_SHARE` of an equal share
      (``DEAD_SHARE * sum(N) / K``) is moved onto a random feature vector of the current batch. Without it a
      codebook collapses to the code that won first (perplexity 1 within a few hundred steps in the shipped
      ``t2p-s`` of the 36-pair training), and the "discrete semantic space" is one vector.
    * Usage loss (training only, :attr:`usage`): ``log K - H(mean_pixels softmax_k(-d_k / (t mean(d))))``, the
      entropy deficit of the batch's soft code usage. Restarts alone do not hold: the commitment loss pulls
      every feature to its code and nothing downstream needs more than one code, so the features themselves
      collapse onto one point; this term (``codebook_usage`` in the ``t2p`` loss) pushes them apart.
    * :attr:`stats` (training only): ``perplexity`` of the batch's code usage, ``exp(entropy)`` (1: one code,
      ``num_codes``: all used equally), and ``restarted`` (codes restarted in this step).
    """

    #: Share of an equal usage below which a code counts as dead and is restarted.
    DEAD_SHARE = 0.03

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        if num_codes < 1 or not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: need num_codes >= 1 and 0 <= decay < 1, got {num_codes}, {decay}")
        self.num_codes, self.dim, self.decay, self.eps = num_codes, dim, decay, eps
        codes = torch.randn(num_codes, dim) * 0.1
        self.register_buffer("codebook", codes)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", codes.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.commitment: torch.Tensor | None = None
        self.usage: torch.Tensor | None = None
        self.stats: dict[str, float] = {}

    def distances(self, z: torch.Tensor, codebook: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, K, H, W)`` squared distances of every feature vector of ``z (B, D, H, W)`` to every code (of
        ``codebook``, default the current one)."""
        cb = self.codebook if codebook is None else codebook
        zz = (z * z).sum(1, keepdim=True)
        ze = F.conv2d(z, cb[:, :, None, None])
        ee = (cb * cb).sum(1).reshape(1, -1, 1, 1)
        return zz - 2.0 * ze + ee

    def quantize(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices (B, H, W)`` as ``(B, D, H, W)``."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        pick = torch.randperm(flat.shape[0], device=flat.device)
        if flat.shape[0] < self.num_codes:  # fewer vectors than codes: repeat them, with a little jitter
            pick = pick.repeat(math.ceil(self.num_codes / flat.shape[0]))
        codes = flat[pick[:self.num_codes]].clone()
        codes = codes + 1e-3 * torch.randn_like(codes)
        self.codebook.copy_(codes)
        self.ema_sum.copy_(codes)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step of the codebook towards the vectors of ``z (B, D, H, W)`` assigned by ``indices``."""
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        onehot = F.one_hot(indices.reshape(-1), self.num_codes).float()  # (N, K)
        n = onehot.sum(0)
        s = onehot.t() @ flat
        d = self.decay
        self.ema_count.mul_(d).add_((1.0 - d) * n)
        self.ema_sum.mul_(d).add_((1.0 - d) * s)
        used = (n > 0)[:, None]
        updated = self.ema_sum / self.ema_count.clamp_min(self.eps)[:, None]
        self.codebook.copy_(torch.where(used, updated, self.codebook))
        p = n / n.sum().clamp_min(1.0)
        perplexity = float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
        dead = self.ema_count < self.DEAD_SHARE * self.ema_count.sum() / self.num_codes
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
            self.codebook[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0
        self.stats = {"perplexity": perplexity, "restarted": float(n_dead)}

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initialized):
            self._init_from(z.detach().permute(0, 2, 3, 1).reshape(-1, self.dim))
        # training: against a copy, since the EMA update below changes the codebook the usage loss's gradient needs
        d = self.distances(z, self.codebook.clone() if self.training else None)
        indices = torch.argmin(d, dim=1)
        q = self.quantize(indices)
        if self.training:
            self.commitment = F.mse_loss(z, q.detach())
            tau = (USAGE_TEMPERATURE * d.detach().mean()).clamp_min(1e-6)
            soft = torch.softmax(-d / tau, dim=1).mean(dim=(0, 2, 3))
            self.usage = math.log(self.num_codes) + (soft * torch.log(soft.clamp_min(1e-12))).sum()
            self.ema_update(z, indices)
        return z + (q - z).detach(), indices


class T2P(nn.Module):
    """The Text-to-Pixels network; see the module docstring. ``forward(ir, vis, illum, glare) -> fused Y``.

    Registry attributes (set by :func:`_create_t2p`): ``variant``, ``family``, ``config``. During a training
    forward the network publishes ``aux_losses = {"commitment": ...}``.
    """

    variant: str
    family: str
    config: dict[str, Any]
    #: What a training forward reports in :attr:`diagnostics` (the trainer logs their epoch means): codebook
    #: perplexity and restarted codes; the full-resolution gate's mean, spread and share of saturated pixels
    #: (a gate at 0 or 1 everywhere is a hard per-pixel switch, what ``max`` does).
    DIAGNOSTICS = ("perplexity", "restarted", "gate_mean", "gate_std", "gate_saturated")

    def __init__(self, channels: tuple[int, int, int] = (8, 16, 32), semantic_blocks: int = 1, heads: int = 2,
                 kv_pool: int = 8, gate_hidden: int = 8, codebook_size: int = 64, codebook_decay: float = 0.99,
                 prompts: Sequence[str] = DEFAULT_PROMPTS, text_dim: int = 64, text_source: str = "hash:64") -> None:
        super().__init__()
        c0, c1, c2 = channels
        if not prompts:
            raise ValueError("T2P: at least one prompt is needed")
        self.prompts, self.text_source = tuple(prompts), text_source
        self.register_buffer("text_emb", torch.zeros(len(self.prompts), text_dim))
        self.text_proj = nn.Linear(text_dim, c2)
        self.text_norm = nn.LayerNorm(c2)
        self.enc_ir, self.enc_vis = self._encoder(channels, semantic_blocks), self._encoder(channels, semantic_blocks)
        self.gate0 = TextGate(c2, gate_hidden)
        self.gate1 = TextGate(c2, gate_hidden)
        self.block = TextGuidedBlock(c2, heads, kv_pool)
        self.vq = VectorQuantizer(codebook_size, c2, codebook_decay)
        self.dec1 = nn.Sequential(_conv(c2 + c1, c1), _conv(c1, c1))
        self.dec0 = _conv(c1 + c0, c0)
        self.head = nn.Conv2d(c0, 4, 3, 1, 1)  # 4 = 2x2 full-resolution pixels per half-resolution pixel
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.aux_losses: dict[str, torch.Tensor] = {}
        self.diagnostics: dict[str, float] = {}
        #: input height and width must be multiples of this (pixel unshuffle, then two stride-2 stages)
        self.multiple = 8

    @staticmethod
    def _encoder(channels: tuple[int, int, int], blocks: int) -> nn.ModuleDict:
        c0, c1, c2 = channels
        return nn.ModuleDict({
            "l0": _conv(4, c0),  # one layer at the most expensive resolution
            "l1": nn.Sequential(_conv(c0, c1, stride=2), _conv(c1, c1)),
            "l2": nn.Sequential(_conv(c1, c2, stride=2), *[ResBlock(c2) for _ in range(blocks)]),
        })

    @staticmethod
    def _encode(enc: nn.ModuleDict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f0 = enc["l0"](F.pixel_unshuffle(x, 2))
        f1 = enc["l1"](f0)
        return f0, f1, enc["l2"](f1)

    @property
    def guidance(self) -> str:
        """What steers the fusion, for :meth:`LearnedFuser.describe`: the text encoder the prompts came from."""
        return f"text-guided ({self.text_source}, {len(self.prompts)} prompts)"

    @torch.no_grad()
    def set_text_embeddings(self, emb: torch.Tensor) -> None:
        """Cache the prompt embeddings ``(T, text_dim)`` in the ``text_emb`` buffer (saved with the weights)."""
        if tuple(emb.shape) != tuple(self.text_emb.shape):
            raise ValueError(f"T2P: prompt embeddings of shape {tuple(emb.shape)}, expected "
                             f"{tuple(self.text_emb.shape)} ({len(self.prompts)} prompts x text_dim)")
        self.text_emb.copy_(emb.to(self.text_emb))

    def text_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens ``(T, c2)`` and pooled prompt ``(c2,)`` from the cached embeddings."""
        tokens = self.text_norm(self.text_proj(self.text_emb))
        return tokens, tokens.mean(0)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        tokens, pooled = self.text_tokens()
        i0, i1, i2 = self._encode(self.enc_ir, ir)
        v0, v1, v2 = self._encode(self.enc_vis, vis)
        illum1, glare1 = F.avg_pool2d(illum, 2), F.avg_pool2d(glare, 2)
        f0, w0 = self.gate0(i0, v0, illum1, glare1, pooled)
        f1, _ = self.gate1(i1, v1, F.avg_pool2d(illum1, 2), F.avg_pool2d(glare1, 2), pooled)
        s, _ = self.vq(self.block(i2, v2, tokens, pooled))
        if self.training and self.vq.commitment is not None:
            self.aux_losses = {"commitment": self.vq.commitment}
            if self.vq.usage is not None:
                self.aux_losses["codebook_usage"] = self.vq.usage
            with torch.no_grad():
                w = w0.detach().float()
                self.diagnostics = {**self.vq.stats, "gate_mean": float(w.mean()), "gate_std": float(w.std()),
                                    "gate_saturated": float(((w < 0.05) | (w > 0.95)).float().mean())}
        return decode_residual(self, s, f1, f0, w0, ir, vis)


def _create_t2p(variant: str, config: dict[str, Any], overrides: dict[str, Any]) -> T2P:
    """Build a T2P and fill its prompt-embedding buffer.

    ``text_encoder`` (an override only, never part of the config): a :class:`TextEncoder` or a spec for
    :func:`load_text_encoder`. With it, the prompts are encoded now and ``text_dim``/``text_source`` follow the
    encoder. Without it, a ``hash`` source is recomputed (built in, deterministic) and any other source leaves a
    zero placeholder that the weights file's state dict fills (rebuilding a trained network needs no encoder).
    """
    cfg = {**config, **overrides}
    encoder: TextEncoder | str | None = cfg.pop("text_encoder", None)
    cfg["channels"] = tuple(int(c) for c in cfg["channels"])
    if len(cfg["channels"]) != 3:
        raise TypeError(f"channels must be three numbers, got {cfg['channels']}")
    if isinstance(cfg["prompts"], str):
        raise TypeError("prompts must be a list of strings, not one string")
    cfg["prompts"] = [str(p) for p in cfg["prompts"]]
    if isinstance(encoder, str):
        encoder = load_text_encoder(encoder)
    if encoder is None and str(cfg["text_source"]).startswith("hash"):
        encoder = HashTextEncoder(int(cfg["text_dim"]))
    if encoder is not None:
        cfg["text_dim"], cfg["text_source"] = int(encoder.dim), str(encoder.name)
    net = T2P(**cfg)
    if encoder is not None:
        net.set_text_embeddings(encoder.encode(cfg["prompts"]))
    return identify(net, variant, "t2p", cfg)


@register_net("t2p", "Text-to-Pixels, real-time size (text-guided gates and attention, codebook; about 88 k "
                     "parameters, no full-resolution convolution).")
def t2p_s(**overrides: Any) -> T2P:
    return _create_t2p("t2p-s", dict(channels=(8, 16, 32), semantic_blocks=1, heads=2, kv_pool=8, gate_hidden=8,
                                     codebook_size=64, codebook_decay=0.99, prompts=list(DEFAULT_PROMPTS),
                                     text_dim=64, text_source="hash:64"), overrides)


@register_net("t2p", "Text-to-Pixels, paper size (wider, deeper semantic branch, 512 codes; about 2.5 M "
                     "parameters).")
def t2p(**overrides: Any) -> T2P:
    return _create_t2p("t2p", dict(channels=(32, 64, 128), semantic_blocks=3, heads=4, kv_pool=4, gate_hidden=16,
                                   codebook_size=512, codebook_decay=0.99, prompts=list(DEFAULT_PROMPTS),
                                   text_dim=64, text_source="hash:64"), overrides)


# AMFusion's fusion terms, plus the codebook's commitment (weight 0.25, VQ-VAE's beta) and usage (0.2: enough to keep
# the perplexity up in a 3000-step run on msrs-split train + FLIR; at 1 it dominates the fusion terms).
register_loss("t2p", {"intensity": 1.0, "gradient": 2.0, "ssim": 0.5, "illumination": 1.0, "glare": 1.0,
                     "commitment": 0.25, "codebook_usage": 0.2}, aux=("commitment", "codebook_usage"))
