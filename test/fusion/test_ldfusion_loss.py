"""LDFusion's language-driven loss with a tiny random CLIP-like model: maths, gradients, direction, plumbing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from fusion.tiny_clip import SIZE, TinyClip, tiny_guide

from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion.nets import create_net
from ivfusion_ros.fusion.nets.ldfusion_loss import (
    CLIP_TERMS,
    PAPER_PROMPTS,
    ClipGuide,
    active_clip,
    clip_preprocess,
    direction_loss,
    load_clip,
    patch_entropy,
    similarity_loss,
    use_clip,
    uses_clip,
)
from ivfusion_ros.fusion.nets.losses import LOSS_DEFAULTS, create_loss

TINY_S = {"dim": 4, "style_channels": 4, "decoder_dim": 8, "mlp_hidden": 8}


def _e(*xs: float) -> torch.Tensor:
    return torch.tensor([[float(x) for x in xs]])


def _textured(seed: int, h: int = 32, w: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=g)


def test_direction_maths_on_hand_made_embeddings() -> None:
    """Text moves along +x from both sources; the image moves along +x, -x or +y from both sources."""
    t_v, t_i, t_f = _e(0, 0, 1), _e(0, 1, 1), _e(1, 1, 1)  # unit-normalised inside; t_f - t_v, t_f - t_i differ
    v, i = _e(0, 0, 1), _e(0, 1, 1)  # images embedded where their texts are
    assert float(direction_loss(_e(1, 1, 1), v, i, t_f, t_v, t_i)) == pytest.approx(0.0, abs=1e-6)
    along_v_only = direction_loss(_e(1, 0, 1), v, i, t_f, t_v, t_i)
    assert 0.0 < float(along_v_only) < 1.0
    f = torch.tensor([[1.0, 0.0]])
    src = torch.tensor([[0.0, 1.0]])
    assert float(direction_loss(f, src, src, _e(1, 0), _e(0, 1), _e(0, 1))) == pytest.approx(0.0, abs=1e-6)
    assert float(direction_loss(src, f, f, _e(1, 0), _e(0, 1), _e(0, 1))) == pytest.approx(2.0, abs=1e-6)
    # orthogonal: 1; and a 0/1 weight keeps only the rows it marks
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    src3 = torch.tensor([[0.0, 1.0, 0.0]])
    loss = direction_loss(rows, src3, src3, _e(1, 0, 0), _e(0, 1, 0), _e(0, 1, 0), weight=torch.tensor([0.0, 1.0]))
    rot = 1 - torch.nn.functional.cosine_similarity(_e(0, -1, 1), _e(1, -1, 0))
    assert float(loss) == pytest.approx(float(rot), abs=1e-6)
    none = direction_loss(rows, src3, src3, _e(1, 0, 0), _e(0, 1, 0), _e(0, 1, 0), weight=torch.zeros(2))
    assert float(none) == 0.0


def test_similarity_maths() -> None:
    assert float(similarity_loss(_e(1, 2), _e(2, 4), _e(3, 6))) == pytest.approx(0.0, abs=1e-6)
    assert float(similarity_loss(_e(1, 0), _e(0, 1), _e(-1, 0))) == pytest.approx(0.5 * 1 + 0.5 * 2, abs=1e-6)


def test_preprocess_and_entropy() -> None:
    x = torch.full((2, 1, 10, 14), 0.5)
    y = clip_preprocess(x, 16)
    assert y.shape == (2, 3, 16, 16)
    torch.testing.assert_close(y[0, :, 0, 0], (0.5 - torch.tensor([0.48145466, 0.4578275, 0.40821073]))
                               / torch.tensor([0.26862954, 0.26130258, 0.27577711]))
    flat, ramp = torch.full((1, 1, 16, 16), 0.3), torch.arange(256.0).view(1, 1, 16, 16) / 255
    torch.testing.assert_close(patch_entropy(torch.cat((flat, ramp))), torch.tensor([0.0, 8.0]))


def test_prompts_are_the_papers_and_text_embeddings_are_unit() -> None:
    g = tiny_guide()
    assert g.prompts == PAPER_PROMPTS and PAPER_PROMPTS["infrared"] == "an infrared image"
    for t in (g.t_visible, g.t_infrared, g.t_fused):
        assert t.shape == (1, 16) and float(t.norm()) == pytest.approx(1.0)
    assert not torch.allclose(g.t_visible, g.t_fused)
    other = tiny_guide(prompts={**PAPER_PROMPTS, "fused": "a sharp bright image"})
    assert not torch.allclose(other.t_fused, g.t_fused)
    with pytest.raises(ModelError, match="keys"):
        tiny_guide(prompts={"fused": "x"})


def _image_guide(target: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> ClipGuide:
    """Text embeddings placed where the tiny CLIP embeds images: t_v = E(V), t_i = E(I), t_f = E(target)."""
    model = TinyClip(seed=3)
    with torch.no_grad():
        emb = {k: model.encode_image(clip_preprocess(x, SIZE))[0]
               for k, x in (("visible", vis), ("infrared", ir), ("fused", target))}
    return ClipGuide(model, text=emb, image_size=SIZE, patches=0, feature_layers=[])


def test_loss_is_lower_along_the_text_direction_than_against_it() -> None:
    """Texts embedded where the tiny CLIP embeds images: t_v = t_i = E(S) for a source S, t_f = E(T) for a target
    T (S with a brighter salient square). A fused image ``S + a (T - S)`` scores 0 at T (a = 1) and better when it
    moves towards T (a > 0) than by the same step away from it (a < 0)."""
    src = 0.4 + 0.2 * torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32)
    target = src.clone()
    target[..., 8:24, 8:24] += 0.2
    guide = _image_guide(target, src, src)
    loss = {a: float(guide.direction(src, src, src + a * (target - src))) for a in (1.0, 0.5, 0.25, -0.25, -0.5)}
    assert loss[1.0] == pytest.approx(0.0, abs=1e-5)
    assert loss[0.5] < 0.1, loss
    assert loss[0.25] < loss[-0.25] - 0.5 and loss[0.5] < loss[-0.5] - 0.5, loss


def test_gradients_reach_the_fusion_network_through_every_clip_term() -> None:
    torch.manual_seed(0)
    net = create_net("ldfusion-s", **TINY_S)
    ir, vis = _textured(4, 32, 32), _textured(5, 32, 32)
    illum, glare = torch.full_like(ir, 0.3), torch.zeros_like(ir)
    guide = tiny_guide(patch_entropy=0.0)
    for term in CLIP_TERMS:
        net.zero_grad()
        loss = create_loss("ldfusion", **{t: float(t == term) for t in CLIP_TERMS})
        with use_clip(guide):
            total, parts = loss(ir, vis, net(ir, vis, illum, glare), illum, glare)
        assert set(parts) == {term} and parts[term] > 0
        total.backward()
        for part in ("content_ir", "content_vis", "style_ir", "style_vis", "mlp", "head"):
            g = torch.cat([p.grad.flatten() for p in getattr(net, part).parameters()])
            assert torch.isfinite(g).all() and g.abs().sum() > 0, (term, part)
    assert all(p.grad is None for p in guide.model.parameters())  # CLIP stays frozen


def test_embeddings_are_encoded_once_per_step() -> None:
    guide = tiny_guide()
    calls = []
    orig = guide.model.encode_image
    guide.model.encode_image = lambda x: (calls.append(x.shape[0]), orig(x))[1]  # type: ignore[method-assign]
    ir, vis, f = _textured(1), _textured(2), _textured(3).requires_grad_()
    for name in ("direction", "similarity", "perceptual"):
        getattr(guide, name)(ir, vis, f)
    assert len(calls) == 3  # I, V, F once, shared by the three terms
    guide.direction(ir, vis, _textured(3))  # new images: encoded again
    assert len(calls) == 6


def test_perceptual_and_patch_terms() -> None:
    guide = tiny_guide()
    x = _textured(7)
    assert float(guide.perceptual(x, x, x)) == pytest.approx(0.0, abs=1e-9)
    assert float(guide.perceptual(x, x, _textured(8))) > 0.0
    flat = torch.full((1, 1, 32, 32), 0.4)  # no information in any crop: no crop counts
    assert float(guide.patch(flat, flat, x)) == 0.0
    f = _textured(9).requires_grad_()
    loss = guide.patch(_textured(10), _textured(11), f)
    loss.backward()
    assert float(loss.detach()) > 0 and f.grad is not None and f.grad.abs().sum() > 0
    with pytest.raises(ModelError, match="no layer"):
        tiny_guide(feature_layers=["visual.99"])


def test_without_clip_the_terms_say_what_is_needed(tmp_path: Path) -> None:
    assert uses_clip(LOSS_DEFAULTS["ldfusion"]) and not uses_clip(LOSS_DEFAULTS["amfusion"])
    assert not uses_clip({**LOSS_DEFAULTS["ldfusion"], **dict.fromkeys(CLIP_TERMS, 0.0), "ssim": 1.0})
    with pytest.raises(ModelError, match="needs CLIP weights: pip install open_clip_torch"):
        active_clip()
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ModelError, match="--clip-weights"):
        create_loss("ldfusion")(x, x, x, x, x)
    with pytest.raises(ModelError, match="needs CLIP weights"):
        load_clip("ViT-B-32", "")
    with pytest.raises(ModelError, match="not found"):
        load_clip("ViT-B-32", str(tmp_path / "missing.bin"))
    # the guide is active only inside the block, and nested blocks restore the outer one
    a, b = tiny_guide(), tiny_guide(seed=1)
    with use_clip(a):
        with use_clip(b):
            assert active_clip() is b
        assert active_clip() is a
    with pytest.raises(ModelError):
        active_clip()


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip is installed here")
def test_load_clip_without_open_clip_is_a_clear_error(tmp_path: Path) -> None:
    weights = tmp_path / "clip.bin"
    weights.write_bytes(b"not really")
    with pytest.raises(ModelError, match="open_clip cannot be imported"):
        load_clip("ViT-B-32", str(weights))
