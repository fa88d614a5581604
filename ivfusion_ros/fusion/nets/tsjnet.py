"""TSJNet (Target and Semantic awareness Joint-driven fusion, arXiv 2402.01212), built from the paper's method.

The official code was read for its structure only. Inputs are luminance; all tensors are ``(B, C, H, W)`` float in
[0, 1] with ``H`` and ``W`` multiples of :attr:`TSJNet.multiple` (:class:`~ivfusion_ros.fusion.learned.LearnedFuser`
pads and crops)::

    ir, vis  (B, 1, H, W)          thermal and visible Y
    illum    (B, 1, H, W)          accepted for the network contract; TSJNet does not use them (they stay
    glare    (B, 1, H, W)          inputs of the exported ONNX model through a zero-weighted term)

TSJNet is an auto-encoder whose decoder is shared by three images: the two sources (reconstruction, a training
signal only) and the fused image. Architecture (``c0, c = channels``, ``s = scale``):

* **Stem**: pixel unshuffle by ``u = min(s, 2)`` (lossless, so no convolution of the real-time size runs at full
  resolution), a 3x3 convolution to ``c0`` channels (the *skip* features), then a convolution to ``c`` channels
  with stride ``s / u`` (``s = 4``: the heavy modules run at 1/4 resolution; ``s = 1``: everything at full
  resolution, as in the paper).
* **Encoder** (one, shared by both modalities, as in the paper: the same filters describe both sources, so their
  features can be added): split-attention residual blocks (ResNeSt). A :class:`SplitAttention` convolution
  computes ``radix`` feature groups ``U_1..U_R``; a squeeze ``z = GAP(sum_r U_r)`` and two 1x1 convolutions give
  per-channel logits ``a_r``; the output is ``sum_r softmax_r(a)_r U_r`` (attention over the radix sums to 1 per
  channel), i.e. the block chooses, per channel and image, which receptive field to trust.
* **LSM** (Local Significant feature Module), two parallel branches on the encoder features:

  - **NAT** (Neighborhood Attention Transformer layer), the *base* branch: pre-norm self-attention in which every
    pixel attends only to the ``k x k`` neighbourhood around it, ``softmax_j(q_i . k_j / sqrt(d) + b_{j-i})
    v_j`` over ``j`` with ``|j - i|_inf <= k // 2`` (learnable relative-position bias ``b``), then an MLP; both
    residual. Local attention costs ``O(HW k^2)``, not ``O((HW)^2)``. Written in plain torch
    (:func:`neighborhood_attention`: zero padding and ``k^2`` shifted slices, neighbours outside the image
    masked out), so it exports to ONNX with dynamic H and W and needs no ``natten``. At the image border the
    window is cut (NATTEN instead shifts it inwards); this works at any size, even smaller than the window.
    With ``base_pool = 2`` (real-time size) the branch works on 2x2-average-pooled features: base features are
    the smooth part, and attention on a quarter of the pixels is what keeps it within the CPU budget.
  - **DSM** (Detail Salience Module), the *detail* branch: ``y = conv(x)``; a salience path pools ``p =
    maxpool_2(y) + avgpool_2(y)`` (max keeps the strongest local response, average its context), gates it by
    squeeze-excitation ``g = sigmoid(W2 relu(W1 GAP(p)))`` (one weight in (0, 1) per channel) and upsamples it
    back: ``out = conv1x1(y) + up(g * p)``.

* **Fusion** of the two sources' features, as in the paper: base ``B_f = NAT_f(B_ir + B_vis)`` and detail ``D_f =
  DSM_f(D_ir + D_vis)`` with their own fusion layers; the skip features are mixed by a 1x1 convolution.
* **Decoder** (spatial-attention decoder): ``[B, D]`` is split into ``att_groups`` channel groups, each gated by its
  own spatial attention map ``sigmoid(conv1x1(group))``; a 1x1 reduction and split-attention blocks follow, then
  upsampling to the skip resolution, the skip features, and a head whose ``u^2`` channels are pixel-shuffled to
  full resolution; ``sigmoid`` keeps the output in (0, 1).
* **Detail skip** (``detail_skip=True``, ours; off in the presets, ``ivfusion train --net detail_skip=true``): at the
  real-time size the decoder works at 1/4 and 1/2 resolution and its output loses the finest edges (VIF 0.55 and
  Qabf 0.39 on msrs-split val after 800 steps, against 1.0 and 0.67 for ``max``). With the skip the decoder's
  image is completed by the sources' 3x3 high-pass detail, mixed by a gate that is the decoder's second output
  channel; a reconstruction gets its own source's detail, so the auto-encoder constraint still holds for
  everything coarser.

Training: the same decoder reconstructs each source from its own features and the network publishes
``aux_losses["reconstruction"]`` (see :func:`reconstruction_loss`). For joint-driven training (the paper's
detection and segmentation networks) a user attaches callables ``(fused (B, 1, H, W)) -> scalar loss`` with
:meth:`TSJNet.attach_tasks` (or the ``detector`` / ``segmenter`` arguments); in training forward passes the network
publishes their values as ``aux_losses["detection"]`` and ``["segmentation"]`` and the gradient reaches the fusion
network through the fused image. The callables are not part of the network's parameters or weights file.
The package's detector is one: :class:`~ivfusion_ros.train.fused_detection.DetectionTask` is the frozen YOLOX
detector's training loss of the fused batch against the batch's boxes (``ivfusion train --variant tsjnet-s
--guide-detector PATH`` attaches it and hands it each batch's boxes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ivfusion_ros.fusion.nets.losses import TERMS, register_loss, register_term, sobel_magnitude, ssim
from ivfusion_ros.fusion.nets.registry import identify, register_net

__all__ = [
    "DetailSalience",
    "LocalSignificant",
    "NATLayer",
    "NeighborhoodAttention",
    "SpatialAttention",
    "SplitAttention",
    "SplitAttentionBlock",
    "TSJNet",
    "TaskLoss",
    "neighborhood_attention",
    "reconstruction_loss",
    "ssim_grad_loss",
    "tsjnet",
    "tsjnet_s",
]

#: A task loss of the fused image, e.g. a detector's or a segmenter's loss against the batch's labels.
TaskLoss = Callable[[torch.Tensor], torch.Tensor]

#: The joint-driven tasks whose losses a TSJNet can publish (``aux_losses[name]``).
TASKS = ("detection", "segmentation")

#: Logit added to neighbours outside the image (finite, so a half-precision softmax stays finite too).
_MASKED = -1.0e4


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(0.1, inplace=True))


# --- encoder: split attention (ResNeSt) -----------------------------------------------------------------------------


class SplitAttention(nn.Module):
    """ResNeSt split-attention convolution (cardinality 1): ``radix`` groups, softmax attention across them.

    ``forward(x (B, cin, H, W)) -> (B, cout, H, W)``; :meth:`attention` gives the weights ``(B, radix, cout)``,
    which sum to 1 over the radix for every channel.
    """

    def __init__(self, cin: int, cout: int, radix: int = 2, kernel: int = 3, reduction: int = 4) -> None:
        super().__init__()
        if cin % radix:
            raise ValueError(f"SplitAttention: input channels {cin} not divisible by radix {radix}")
        self.radix, self.cout = radix, cout
        inter = max(4, cout * radix // reduction)
        self.conv = nn.Conv2d(cin, cout * radix, kernel, 1, kernel // 2, groups=radix)
        self.fc1 = nn.Conv2d(cout, inter, 1)
        self.fc2 = nn.Conv2d(inter, cout * radix, 1)

    def _splits(self, x: torch.Tensor) -> torch.Tensor:
        u = F.relu(self.conv(x))
        return u.reshape(u.shape[0], self.radix, self.cout, u.shape[2], u.shape[3])  # B, R, C, H, W

    def _weights(self, u: torch.Tensor) -> torch.Tensor:
        z = u.sum(1).mean((2, 3), keepdim=True)  # squeeze: B, C, 1, 1
        a = self.fc2(F.relu(self.fc1(z)))  # B, R*C, 1, 1
        return torch.softmax(a.reshape(a.shape[0], self.radix, self.cout), dim=1)  # over the radix

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The radix attention ``(B, radix, cout)`` of ``x`` (for inspection and tests)."""
        return self._weights(self._splits(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self._splits(x)
        a = self._weights(u)
        return (u * a[..., None, None]).sum(1)


class SplitAttentionBlock(nn.Module):
    """Residual bottleneck ``x + conv1x1(SplitAttention(conv1x1(x)))`` of width ``c // 2`` (ResNeSt block).

    No batch normalisation: its running statistics would come from small training crops of a few dozen pairs
    and meet whole night frames at inference; the split attention normalises its own mixture by the softmax.
    """

    def __init__(self, c: int, radix: int = 2) -> None:
        super().__init__()
        width = max(radix, (c // 2) // radix * radix)
        self.reduce = _conv(c, width, 1)
        self.split = SplitAttention(width, width, radix)
        self.expand = nn.Conv2d(width, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.expand(self.split(self.reduce(x))), 0.1)


# --- LSM: neighbourhood attention and detail salience ---------------------------------------------------------------


def neighborhood_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kernel: int,
                           bias: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of every pixel over its ``kernel x kernel`` neighbourhood; ``(B, C, H, W)`` in and out.

    ``out_i = sum_j softmax_j(q_i . k_j / sqrt(d) + bias[h, j - i]) v_j`` over the neighbours ``j`` of pixel ``i``
    inside the image (``d = C / heads``; ``bias`` ``(heads, kernel^2)`` indexed by the offset ``j - i`` in raster
    order). Plain torch for ONNX: keys and values are zero-padded and each of the ``kernel^2`` offsets is a
    static slice (the slice ends are negative offsets from the padded end, so H and W stay dynamic); padded
    neighbours get a large negative logit. Memory is ``O(HW kernel^2 heads)`` for the logits only.
    """
    if kernel % 2 != 1:
        raise ValueError(f"neighbourhood size must be odd, got {kernel}")
    b, c, h, w = q.shape
    d = c // heads
    r = kernel // 2
    pad = (r, r, r, r)
    qh = (q * d**-0.5).reshape(b, heads, d, h, w)
    kp = F.pad(k, pad).reshape(b, heads, d, h + 2 * r, w + 2 * r)
    vp = F.pad(v, pad).reshape(b, heads, d, h + 2 * r, w + 2 * r)
    outside = F.pad(q.new_zeros(1, 1, h, w), pad, value=_MASKED)  # 0 inside the image, _MASKED in the padding

    def window(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        ey, ex = dy - 2 * r, dx - 2 * r  # negative end offsets; 0 means "to the end"
        return t[..., dy:(ey if ey else None), dx:(ex if ex else None)]

    offsets = [(dy, dx) for dy in range(kernel) for dx in range(kernel)]
    logits = []
    for o, (dy, dx) in enumerate(offsets):
        lg = (qh * window(kp, dy, dx)).sum(2) + window(outside, dy, dx)  # B, heads, H, W
        if bias is not None:
            lg = lg + bias[:, o].reshape(1, heads, 1, 1)
        logits.append(lg)
    # softmax over the offsets written out elementwise: a stacked softmax over a middle axis of a 5-D tensor is
    # ~20x slower in ONNX Runtime (it transposes), and this never materialises the (B, heads, k^2, H, W) stack
    m = logits[0]
    for lg in logits[1:]:
        m = torch.maximum(m, lg)
    den = torch.zeros_like(m)
    out = torch.zeros_like(qh)
    for lg, (dy, dx) in zip(logits, offsets):
        e = torch.exp(lg - m)
        den = den + e
        out = out + e.unsqueeze(2) * window(vp, dy, dx)
    out = out / den.unsqueeze(2)
    return out.reshape(b, c, h, w)


class NeighborhoodAttention(nn.Module):
    """1x1 projections around :func:`neighborhood_attention`, with a learnable relative-position bias."""

    def __init__(self, dim: int, heads: int, kernel: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"NeighborhoodAttention: channels {dim} not divisible by heads {heads}")
        if kernel % 2 != 1 or kernel < 1:
            raise ValueError(f"NeighborhoodAttention: kernel must be odd and positive, got {kernel}")
        self.heads, self.kernel = heads, kernel
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.rpb = nn.Parameter(torch.zeros(heads, kernel * kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        return self.proj(neighborhood_attention(q, k, v, self.heads, self.kernel, self.rpb))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of every pixel of a ``(B, C, H, W)`` tensor (the transformer's norm)."""

    def __init__(self, c: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class NATLayer(nn.Module):
    """Pre-norm transformer layer with neighbourhood attention: ``x + NA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, kernel: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        hidden = max(1, int(dim * mlp_ratio))
        self.norm1, self.attn = ChannelNorm(dim), NeighborhoodAttention(dim, heads, kernel)
        self.norm2 = ChannelNorm(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DetailSalience(nn.Module):
    """DSM: ``out = conv1x1(y) + up(g * p)``, ``y = conv(x)``, ``p = maxpool_2(y) + avgpool_2(y)``,
    ``g = sigmoid(W2 relu(W1 GAP(p)))`` (squeeze-excitation, :meth:`gate`).

    Pooling widens the view and keeps the strongest local responses (edges, small warm targets); the gate
    re-weights channels by how salient they are in this image. ``separable`` uses a depthwise + pointwise
    convolution for ``y`` (the real-time size).
    """

    def __init__(self, c: int, reduction: int = 4, separable: bool = False) -> None:
        super().__init__()
        if separable:
            self.conv = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c), nn.Conv2d(c, c, 1),
                                      nn.LeakyReLU(0.1, inplace=True))
        else:
            self.conv = _conv(c, c)
        self.local = nn.Conv2d(c, c, 1)
        hidden = max(2, c // reduction)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def gate(self, p: torch.Tensor) -> torch.Tensor:
        """Squeeze-excitation weights ``(B, C, 1, 1)`` in (0, 1) of the pooled features ``p``."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(p.mean((2, 3), keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        p = F.max_pool2d(y, 2, ceil_mode=True) + F.avg_pool2d(y, 2, ceil_mode=True)
        s = F.interpolate(p * self.gate(p), size=y.shape[-2:], mode="nearest")
        return self.local(y) + s


class LocalSignificant(nn.Module):
    """LSM: the NAT (base) and DSM (detail) branches side by side; ``forward(x) -> (base, detail)``.

    With ``base_pool > 1`` the NAT branch works on ``avgpool_base_pool(x)``: base features are the smooth,
    low-frequency part (the detail branch keeps the full feature resolution), so the real-time size computes its
    attention on a quarter of the pixels, and each window covers four times the area.
    """

    def __init__(self, c: int, heads: int, kernel: int, nat_depth: int, mlp_ratio: float, reduction: int,
                 separable: bool, base_pool: int = 1) -> None:
        super().__init__()
        self.base_pool = base_pool
        self.nat = nn.Sequential(*[NATLayer(c, heads, kernel, mlp_ratio) for _ in range(nat_depth)])
        self.dsm = DetailSalience(c, reduction, separable)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = F.avg_pool2d(x, self.base_pool) if self.base_pool > 1 else x
        return self.nat(xb), self.dsm(x)


# --- decoder --------------------------------------------------------------------------------------------------------


class SpatialAttention(nn.Module):
    """Channel groups, each gated by its own spatial map: ``x_g * sigmoid(conv1x1_g(x_g))`` (:meth:`maps`)."""

    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        if c % groups:
            raise ValueError(f"SpatialAttention: channels {c} not divisible by groups {groups}")
        self.groups = groups
        self.conv = nn.Conv2d(c, groups, 1, groups=groups)

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """Attention maps ``(B, groups, H, W)`` in (0, 1)."""
        return torch.sigmoid(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        xg = x.reshape(b, self.groups, c // self.groups, h, w) * self.maps(x).unsqueeze(2)
        return xg.reshape(b, c, h, w)


class Decoder(nn.Module):
    """Spatial attention over ``[base, detail]``, split-attention blocks, upsampling with the skip features, head."""

    def __init__(self, c0: int, c: int, blocks: int, radix: int, att_groups: int, up: int, unshuffle: int,
                 base_up: int = 1, outputs: int = 1) -> None:
        super().__init__()
        self.base_up = base_up
        self.spa = SpatialAttention(2 * c, att_groups)
        self.reduce = _conv(2 * c, c, 1)
        self.blocks = nn.Sequential(*[SplitAttentionBlock(c, radix) for _ in range(blocks)])
        self.up = up
        self.merge = _conv(c + c0, c0, 1)  # 1x1: this runs at the skip resolution, the head's 3x3 is enough there
        self.head = nn.Conv2d(c0, outputs * unshuffle * unshuffle, 3, 1, 1)
        self.unshuffle = unshuffle

    def forward(self, base: torch.Tensor, detail: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.base_up > 1:
            base = F.interpolate(base, scale_factor=float(self.base_up), mode="bilinear", align_corners=False)
        z = self.blocks(self.reduce(self.spa(torch.cat((base, detail), dim=1))))
        if self.up > 1:
            z = F.interpolate(z, scale_factor=float(self.up), mode="bilinear", align_corners=False)
        y = self.head(self.merge(torch.cat((z, skip), dim=1)))
        if self.unshuffle > 1:
            y = F.pixel_shuffle(y, self.unshuffle)
        return y  # logits: the image (and, with the detail skip, its detail gate)


# --- the network ----------------------------------------------------------------------------------------------------


class TSJNet(nn.Module):
    """The TSJNet network; see the module docstring. ``forward(ir, vis, illum, glare) -> fused Y``.

    Registry attributes (set by :func:`_create_tsjnet`): ``variant``, ``family``, ``config``. In training mode a
    forward pass also sets :attr:`aux_losses` (``reconstruction``, and ``detection`` / ``segmentation`` when
    task losses are attached) and :attr:`reconstructions` ``(ir_hat, vis_hat)``.
    """

    variant: str
    family: str
    config: dict[str, Any]

    def __init__(self, channels: tuple[int, int] = (8, 16), scale: int = 4, radix: int = 2, enc_blocks: int = 1,
                 dec_blocks: int = 1, heads: int = 2, kernel: int = 5, nat_depth: int = 1, mlp_ratio: float = 2.0,
                 se_reduction: int = 4, att_groups: int = 4, separable: bool = True, base_pool: int = 2,
                 detail_skip: bool = False, detector: TaskLoss | None = None,
                 segmenter: TaskLoss | None = None) -> None:
        super().__init__()
        c0, c = channels
        if scale not in (1, 2, 4):
            raise ValueError(f"TSJNet: scale must be 1, 2 or 4, got {scale}")
        if base_pool not in (1, 2):
            raise ValueError(f"TSJNet: base_pool must be 1 or 2, got {base_pool}")
        u = min(scale, 2)
        self.unshuffle, self.scale = u, scale
        self.stem = _conv(u * u, c0)
        self.down = _conv(c0, c, stride=scale // u)
        self.encoder = nn.Sequential(*[SplitAttentionBlock(c, radix) for _ in range(enc_blocks)])
        self.lsm = LocalSignificant(c, heads, kernel, nat_depth, mlp_ratio, se_reduction, separable, base_pool)
        self.base_fuse = NATLayer(c, heads, kernel, mlp_ratio)
        self.detail_fuse = DetailSalience(c, se_reduction, separable)
        self.skip_fuse = _conv(2 * c0, c0, 1)
        self.decoder = Decoder(c0, c, dec_blocks, radix, att_groups, scale // u, u, base_pool,
                               outputs=2 if detail_skip else 1)
        self.detail_skip = detail_skip
        #: input height and width must be multiples of this (unshuffle, stride, the DSM's and the base branch's
        #: 2x2 pooling)
        self.multiple = 2 * scale
        #: network-computed loss terms of the last training forward pass
        self.aux_losses: dict[str, torch.Tensor] = {}
        self.reconstructions: tuple[torch.Tensor, torch.Tensor] | None = None
        # a plain dict, not submodules: task networks are the user's, never part of this network's weights
        self._tasks: dict[str, TaskLoss] = {}
        self.attach_tasks(**{n: f for n, f in zip(TASKS, (detector, segmenter)) if f is not None})

    guidance = "self-guided"  # LearnedFuser.describe(): the network carries no detector at inference

    def attach_tasks(self, **tasks: TaskLoss | None) -> TSJNet:
        """Attach task losses of joint-driven training by name (``detection``, ``segmentation``); ``None`` detaches
        one, names not given stay as they are.

        Each is a callable ``(fused (B, 1, H, W)) -> scalar tensor``, e.g. a detector's loss of the fused batch
        against the batch's boxes (a closure that knows the current targets) or a segmenter's cross-entropy.
        Their parameters are not this network's; train or freeze them yourself. The loss weights are the
        ``detection`` and ``segmentation`` terms of the ``tsjnet`` loss (default 0: give e.g.
        ``loss={"detection": 1.0}``).
        """
        for name, fn in tasks.items():
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r} (TSJNet knows {', '.join(TASKS)})")
            if fn is None:
                self._tasks.pop(name, None)
            elif not callable(fn):
                raise TypeError(f"{name} task loss must be callable, got {type(fn).__name__}")
            else:
                self._tasks[name] = fn
        return self

    @property
    def tasks(self) -> tuple[str, ...]:
        """Names of the attached task losses."""
        return tuple(self._tasks)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Skip, base and detail features of images ``x (B, 1, H, W)``."""
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        skip = self.stem(x)
        base, detail = self.lsm(self.encoder(self.down(skip)))
        return skip, base, detail

    def _output(self, logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """The image from the decoder's logits. Without the detail skip ``sigmoid(logits)``. With it the decoder's
        image is completed by the sources' finest detail (:func:`high_pass`): for the fused image mixed by the
        decoder's second output, ``g hp(a) + (1 - g) hp(b)`` with ``g = sigmoid``, for a reconstruction (``b`` is
        None) the source's own; clamped to [0, 1]."""
        if not self.detail_skip:
            return torch.sigmoid(logits)
        img = torch.sigmoid(logits[:, :1])
        if b is None:
            return (img + high_pass(a)).clamp(0.0, 1.0)
        g = torch.sigmoid(logits[:, 1:2])
        d_b = high_pass(b)
        return (img + d_b + g * (high_pass(a) - d_b)).clamp(0.0, 1.0)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, illum: torch.Tensor, glare: torch.Tensor) -> torch.Tensor:
        b = ir.shape[0]
        skip, base, detail = self.encode(torch.cat((ir, vis), dim=0))  # one shared encoder, one pass
        s_ir, s_vis = skip[:b], skip[b:]
        base_f = self.base_fuse(base[:b] + base[b:])
        detail_f = self.detail_fuse(detail[:b] + detail[b:])
        skip_f = self.skip_fuse(torch.cat((s_ir, s_vis), dim=1))
        if not self.training:
            self.aux_losses, self.reconstructions = {}, None
            # TSJNet has no use for the maps; a zero-weighted 1x1 slice keeps them graph inputs of the ONNX model,
            # which every fusion network shares (ir, vis, illum, glare); it costs one broadcast add
            unused = 0.0 * (illum[:, :, :1, :1] + glare[:, :, :1, :1])
            return self._output(self.decoder(base_f, detail_f, skip_f), ir, vis) + unused
        # training: the shared decoder also reconstructs both sources from their own features (one batched pass)
        out = self.decoder(torch.cat((base_f, base), dim=0), torch.cat((detail_f, detail), dim=0),
                           torch.cat((skip_f, skip), dim=0))
        fused = self._output(out[:b], ir, vis)
        ir_hat, vis_hat = self._output(out[b:2 * b], ir), self._output(out[2 * b:], vis)
        self.reconstructions = (ir_hat, vis_hat)
        aux = {"reconstruction": reconstruction_loss(ir, vis, ir_hat, vis_hat)}
        for name, fn in self._tasks.items():
            aux[name] = fn(fused)
        self.aux_losses = aux
        return fused


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """``x - box3(x)``: the finest detail of an image (3x3 mean, borders averaged over the pixels inside)."""
    return x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _create_tsjnet(variant: str, config: dict[str, Any], overrides: dict[str, Any]) -> TSJNet:
    cfg = {**config, **overrides}
    detector, segmenter = cfg.pop("detector", None), cfg.pop("segmenter", None)
    cfg["channels"] = tuple(int(c) for c in cfg["channels"])
    if len(cfg["channels"]) != 2:
        raise TypeError(f"channels must be two numbers, got {cfg['channels']}")
    net = TSJNet(**cfg, detector=detector, segmenter=segmenter)
    return identify(net, variant, "tsjnet", cfg)


@register_net("tsjnet", "TSJNet, real-time size (about 11 k parameters; LSM at 1/4 resolution, no full-resolution "
                        "convolution).")
def tsjnet_s(**overrides: Any) -> TSJNet:
    return _create_tsjnet("tsjnet-s", dict(channels=(8, 16), scale=4, radix=2, enc_blocks=1, dec_blocks=1, heads=2,
                                           kernel=5, nat_depth=1, mlp_ratio=2.0, se_reduction=4, att_groups=4,
                                           separable=True, base_pool=2), overrides)


@register_net("tsjnet", "TSJNet, paper size (about 0.28 M parameters: 64 features at full resolution, 7x7 "
                        "neighbourhoods, two split-attention blocks per side).")
def tsjnet(**overrides: Any) -> TSJNet:
    return _create_tsjnet("tsjnet", dict(channels=(32, 64), scale=1, radix=2, enc_blocks=2, dec_blocks=2, heads=4,
                                         kernel=7, nat_depth=2, mlp_ratio=2.0, se_reduction=4, att_groups=8,
                                         separable=False, base_pool=1), overrides)


# --- loss -----------------------------------------------------------------------------------------------------------

#: Share of the visible image in the reconstruction term (the official training weighs visible 6 : 1 thermal:
#: the visible image carries the texture the fused image must keep; thermal is mostly smooth).
RECON_VIS_SHARE = 6.0 / 7.0


def reconstruction_loss(ir: torch.Tensor, vis: torch.Tensor, ir_hat: torch.Tensor,
                        vis_hat: torch.Tensor) -> torch.Tensor:
    """``(6 MSE(V_hat, V) + MSE(I_hat, I)) / 7``: the shared decoder must rebuild each source from its features.

    This keeps the encoder's base and detail features complete descriptions of the sources (an auto-encoder
    constraint), so fusing them by addition cannot drop one modality's content.
    """
    mse_v = F.mse_loss(vis_hat.float(), vis.float())
    mse_i = F.mse_loss(ir_hat.float(), ir.float())
    return RECON_VIS_SHARE * mse_v + (1.0 - RECON_VIS_SHARE) * mse_i


def ssim_grad_loss(ir: torch.Tensor, vis: torch.Tensor, fused: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """TSJNet's SSIM term ``1 - (w_I SSIM(F, I) + w_V SSIM(F, V))`` with gradient-share weights
    ``w_I = mean|grad I| / (mean|grad I| + mean|grad V|)``, ``w_V = 1 - w_I`` (Sobel, means over the batch).

    The source with more texture in the batch contributes more structure; a flat night visible image asks for
    little. The weights are constants of the batch (no gradient flows through them: they only weigh).
    """
    gi, gv = sobel_magnitude(ir).mean(), sobel_magnitude(vis).mean()
    w_i = (gi / (gi + gv + eps)).detach()
    return 1.0 - (w_i * ssim(fused, ir) + (1.0 - w_i) * ssim(fused, vis))


if "ssim_grad" not in TERMS:
    register_term("ssim_grad", lambda ir, vis, f, il, gl: ssim_grad_loss(ir, vis, f))

#: TSJNet's multi-facet fusion loss: the official 20 L_int + 20 L_grad + 10 L_ssim + 6 MSE_V + 1 MSE_I, divided by
#: 10 (only ratios matter with AdamW); the task terms are off until task losses are attached.
TSJNET_LOSS = {"intensity": 2.0, "gradient": 2.0, "ssim_grad": 1.0, "reconstruction": 0.7,
               "detection": 0.0, "segmentation": 0.0}
register_loss("tsjnet", TSJNET_LOSS, aux=("reconstruction", *TASKS))
