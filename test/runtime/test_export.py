"""Weights files, ONNX export with parity, the ONNX Runtime runner, and the model-only benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from ivfusion_ros.cli.bench import bench_nets
from ivfusion_ros.cli.main import app
from ivfusion_ros.errors import ConfigError, ModelError
from ivfusion_ros.fusion.nets import create_net
from ivfusion_ros.fusion.nets.weights import (
    build_from_weights,
    config_hash,
    load_weights,
    read_onnx_header,
    save_weights,
)
from ivfusion_ros.runtime.export import PARITY_TOL, export_onnx, parity
from ivfusion_ros.runtime.onnx_net import OnnxNetRunner

TINY = {"channels": [4, 8, 8], "semantic_blocks": 1, "heads": 2, "kv_pool": 2, "idfm_hidden": 4}


def _tiny_net(seed: int = 0) -> torch.nn.Module:
    """A tiny amfusion-s whose output head is not zero (an untrained one only returns the IDFM mix)."""
    torch.manual_seed(seed)
    net = create_net("amfusion-s", **TINY)
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def _inputs(b: int, h: int, w: int, seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 1, h, w, generator=g) for _ in range(4)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    net = _tiny_net()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(net, path, exporter="torchscript", meta={"data": "unit test"})
    return net, path


# --- weights files ------------------------------------------------------------------------------------------------


def test_weights_round_trip_keeps_state_and_metadata(tmp_path: Path) -> None:
    net = _tiny_net()
    path = save_weights(tmp_path / "w.pt", net, {"epochs": 3, "data": ["a", "b"]})
    wf = load_weights(path, families=("amfusion",))
    assert (wf.variant, wf.family, wf.meta) == ("amfusion-s", "amfusion", {"epochs": 3, "data": ["a", "b"]})
    assert wf.config == net.config and wf.config_hash == config_hash("amfusion-s", net.config)
    again = build_from_weights(wf).eval()
    xs = _inputs(1, 16, 24)
    with torch.inference_mode():
        torch.testing.assert_close(again(*xs), net(*xs), rtol=0, atol=0)


def test_config_hash_is_stable_and_order_independent() -> None:
    a = config_hash("amfusion-s", {"channels": [4, 8, 8], "heads": 2})
    assert a == config_hash("amfusion-s", {"heads": 2, "channels": [4, 8, 8]})
    assert a != config_hash("amfusion-s", {"channels": [4, 8, 16], "heads": 2})
    assert len(a) == 16 and int(a, 16) >= 0


def _blob(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt"),
        (lambda p: p.write_bytes(b"not a torch file at all"), "corrupt"),
        (lambda p: torch.save({"state_dict": {}}, p), "not an ivfusion weights file"),
        (lambda p: torch.save({**_blob(p), "format_version": 99}, p), "newer than"),
        (lambda p: torch.save({**_blob(p), "config": {**_blob(p)["config"], "heads": 1}}, p), "hash mismatch"),
        (lambda p: torch.save({**_blob(p), "variant": "nonesuch-net"}, p), "does not know"),
    ],
)
def test_damaged_weights_give_clear_errors(tmp_path: Path, damage, message: str) -> None:
    path = save_weights(tmp_path / "w.pt", _tiny_net())
    damage(path)
    with pytest.raises(ModelError, match=message) as err:
        load_weights(path)
    assert str(path) in str(err.value)


def test_missing_weights_and_wrong_family(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_weights(tmp_path / "nope.pt")
    path = save_weights(tmp_path / "w.pt", _tiny_net())
    with pytest.raises(ModelError, match="expected one of"):
        load_weights(path, families=("tsjnet",))


def test_state_dict_that_does_not_fit_the_config(tmp_path: Path) -> None:
    path = save_weights(tmp_path / "w.pt", _tiny_net())
    blob = _blob(path)
    blob["state_dict"].pop(next(iter(blob["state_dict"])))
    torch.save(blob, path)
    with pytest.raises(ModelError, match="do not match network"):
        build_from_weights(load_weights(path))


# --- export and parity -------------------------------------------------------------------------------------------


def test_export_writes_header_and_dynamic_axes(exported: tuple[torch.nn.Module, Path]) -> None:
    net, path = exported
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["ir", "vis", "illum", "glare"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param and not d.dim_value for i, d in enumerate(dims) if i != 1)  # B, H, W symbolic
    header = json.loads({p.key: p.value for p in model.metadata_props}["ivfusion"])
    assert header["variant"] == "amfusion-s" and header["config"] == net.config
    assert header["meta"] == {"data": "unit test", "multiple": net.multiple}
    wf = read_onnx_header(path, families=("amfusion",))
    assert wf.config_hash == config_hash("amfusion-s", net.config)


@pytest.mark.parametrize(("b", "h", "w"), [(1, 8, 8), (1, 40, 72), (3, 24, 16)])
def test_onnx_runtime_matches_torch_at_other_sizes(exported, b: int, h: int, w: int) -> None:
    net, path = exported
    xs = _inputs(b, h, w)
    with torch.inference_mode():
        ref = net(*xs)
    got = OnnxNetRunner(path)(*xs)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert float((got - ref).abs().max()) < PARITY_TOL
    assert float((ref - xs[1]).abs().max()) > 1e-2  # the net does more than copy an input: parity means something


def test_parity_detects_a_different_network(exported) -> None:
    _, path = exported
    other = _tiny_net(seed=1)
    assert max(parity(other, path, ((1, 16, 16),)).values()) > PARITY_TOL


def test_dynamo_exporter(tmp_path: Path) -> None:
    """The default exporter (torch.export): dynamic batch and size, same numbers as torch."""
    res = export_onnx(_tiny_net(), tmp_path / "d.onnx", exporter="dynamo")
    assert set(res.max_abs_diff) == {"1x24x56", "2x72x48"}
    assert max(res.max_abs_diff.values()) < PARITY_TOL


def test_runner_errors(exported, tmp_path: Path) -> None:
    _, path = exported
    runner = OnnxNetRunner(path, families=("amfusion",))
    assert (runner.variant, runner.family, runner.multiple) == ("amfusion-s", "amfusion", 8)
    with pytest.raises(ModelError, match="not a multiple of 8"):
        runner(*_inputs(1, 12, 16))
    with pytest.raises(ModelError, match="expected one of"):
        OnnxNetRunner(path, families=("tsjnet",))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelError, match="broken.onnx"):
        OnnxNetRunner(broken)
    plain = tmp_path / "plain.onnx"
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    with pytest.raises(ModelError, match="no ivfusion metadata"):
        OnnxNetRunner(plain)


def test_export_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(_tiny_net(), tmp_path / "x.onnx", opset=13)
    with pytest.raises(ConfigError, match="exporter"):
        export_onnx(_tiny_net(), tmp_path / "x.onnx", exporter="tflite")


# --- the command and the benchmark -------------------------------------------------------------------------------


def test_export_command_from_weights(tmp_path: Path) -> None:
    weights = save_weights(tmp_path / "w.pt", _tiny_net(), {"epochs": 7})
    out = tmp_path / "m.onnx"
    args = ["export", "--variant", "amfusion-s", "--weights", str(weights), "--out", str(out),
            "--exporter", "torchscript"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    wf = read_onnx_header(out)
    assert wf.meta["epochs"] == 7 and wf.meta["source_weights"] == "w.pt"
    wrong = CliRunner().invoke(app, [*args[:2], "amfusion", *args[3:]])
    assert wrong.exit_code == 1 and "not 'amfusion'" in wrong.output


def test_bench_nets_times_torch_and_onnxruntime() -> None:
    rows = bench_nets(["amfusion-s"], 100, 60, n=5, threads=1)
    (row,) = rows
    assert row["input"] == [104, 64]  # padded to the network's multiple
    assert row["params"] == sum(p.numel() for p in create_net("amfusion-s").parameters())
    assert row["torch"]["p50"] > 0 and row["onnxruntime"]["p50"] > 0
    assert row["parity_max_abs_diff"] < PARITY_TOL
    # the MACs scale with the pixels (a fully convolutional network plus pooled attention)
    big = bench_nets(["amfusion-s"], 200, 120, n=5, threads=1)[0]
    assert big["input"] == [200, 120] and 0 < row["gmac"] < big["gmac"]
    assert big["gmac"] / row["gmac"] == pytest.approx(200 * 120 / (104 * 64), rel=0.3)


def test_bench_nets_takes_a_weights_file_and_counts_its_guide(tmp_path: Path) -> None:
    from ivfusion_ros.detect.nets.yolox import YoloxNano
    from ivfusion_ros.fusion.nets.weights import save_weights

    guided = create_net("amfusion-s", guide=YoloxNano())
    path = save_weights(tmp_path / "guided.pt", guided)
    a, b = bench_nets(["amfusion-s", str(path)], 96, 64, n=3, threads=1)
    assert b["net"] == "guided.pt" and b["params"] == sum(p.numel() for p in guided.parameters()) > a["params"]
    assert b["gmac"] > a["gmac"]  # the detector backbone's convolutions
