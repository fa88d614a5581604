from __future__ import annotations

import pytest
import torch

from ivfusion_ros.errors import ConfigError
from ivfusion_ros.fusion import FusionContext, create_fuser, list_fusers


def test_builtin_variants_are_registered() -> None:
    infos = {i.name: i for i in list_fusers()}
    assert {"adaptive", "average", "max"} <= set(infos)
    assert not infos["adaptive"].needs_weights


def test_unknown_variant_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown variant 'foo' \(available: .*adaptive"):
        create_fuser("foo")


def test_overrides_are_validated() -> None:
    assert create_fuser("adaptive", levels=3).cfg.levels == 3
    with pytest.raises(ConfigError, match="fusion.levels: 99 is above the maximum"):
        create_fuser("adaptive", levels=99)


@pytest.mark.parametrize("name", ["average", "max"])
def test_baselines(name: str) -> None:
    ir = torch.tensor([[[[0.2, 0.8]]]])
    gray = torch.tensor([[[[0.6, 0.4]]]]).expand(1, 3, 1, 2)
    out = create_fuser(name).fuse(ir, gray, FusionContext.uniform(ir))
    expected = {"average": [0.4, 0.6], "max": [0.6, 0.8]}[name]
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(expected), atol=1e-5, rtol=0)
