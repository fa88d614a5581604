"""A randomly initialised CLIP-like model for tests: tiny conv image encoder, embedding-table text encoder.

It has CLIP's interface (``encode_image(x (B, 3, S, S)) -> (B, D)``, ``encode_text(tokens) -> (B, D)``) and
nothing of its knowledge, which is all the loss's plumbing, maths and gradients need. ``tokenize`` maps each word
to a bucket of the embedding table, so different prompts give different text embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from ivfusion_ros.fusion.nets.ldfusion_loss import ClipGuide

SIZE = 32  # CLIP input side of the tiny model (224 for real CLIP)


class TinyClip(nn.Module):
    def __init__(self, dim: int = 16, vocab: int = 64, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.visual = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.proj = nn.Linear(16, dim)
        self.words = nn.Embedding(vocab, dim)
        self.vocab = vocab

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.visual(x).mean(dim=(2, 3)))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.words(tokens).mean(dim=1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        rows = [[sum(map(ord, w)) % self.vocab for w in t.split()][:8] for t in texts]
        return torch.tensor([r + [0] * (8 - len(r)) for r in rows])


def tiny_guide(seed: int = 0, **kw: object) -> ClipGuide:
    """A :class:`ClipGuide` around :class:`TinyClip` with the paper's prompts and both conv layers as features."""
    model = TinyClip(seed=seed)
    kw = {"image_size": SIZE, "patches": 2, "patch_entropy": 3.0, "feature_layers": ["visual.1", "visual.3"], **kw}
    return ClipGuide(model, tokenizer=model.tokenize, **kw)
