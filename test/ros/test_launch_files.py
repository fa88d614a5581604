"""The launch files build the actions the README promises (needs the ROS ``launch`` packages, not a graph)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

# A skip at import time would, under launch_testing's pytest plugin, skip every test in this folder.
try:
    from launch import LaunchContext, LaunchDescription
    from launch.utilities import perform_substitutions
    from launch_ros.utilities import evaluate_parameters
except ImportError:
    LaunchContext = None
pytestmark = pytest.mark.skipif(LaunchContext is None, reason="ROS 2 launch / launch_ros are not installed "
                                                             "(source a ROS 2 setup.bash)")

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context(**values: str) -> LaunchContext:
    ctx = LaunchContext()
    ctx.launch_configurations.update(values)
    return ctx


def _defaults(module: ModuleType) -> dict[str, str]:
    desc = module.generate_launch_description()
    assert isinstance(desc, LaunchDescription)
    return {a.name: "".join(s.perform(LaunchContext()) for s in a.default_value) if a.default_value else ""
            for a in desc.get_launch_arguments()}


def test_fusion_launch_remaps_and_overrides() -> None:
    mod = _load("fusion.launch.py")
    args = _defaults(mod)
    assert {"thermal_topic", "rgb_topic", "variant", "params_file", "namespace", "use_sim_time", "device",
            "log_level", "compressed", "detector", "model"} <= set(args)
    assert args["thermal_topic"] == "/thermal/image_raw" and args["rgb_topic"] == "/camera/image_raw"
    assert args["params_file"].endswith("config/fusion.yaml")
    args.update(thermal_topic="/flir/image", variant="max", compressed="true", use_sim_time="true",
                namespace="front")
    ctx = _context(**args)
    (node,) = mod._node(ctx)
    remaps = {perform_substitutions(ctx, src): perform_substitutions(ctx, dst) for src, dst in node._Node__remappings}
    assert remaps == {"thermal/image": "/flir/image", "thermal/image/compressed": "/flir/image/compressed",
                      "rgb/image": "/camera/image_raw", "rgb/image/compressed": "/camera/image_raw/compressed"}
    params_file, overrides = evaluate_parameters(ctx, node._Node__parameters)
    assert str(getattr(params_file, "param_file", params_file)) == args["params_file"]
    assert overrides == {"use_sim_time": True, "fusion.variant": "max", "node.compressed": True}


def test_replay_launch_plays_with_clock_and_records_outputs() -> None:
    mod = _load("replay.launch.py")
    args = _defaults(mod)
    args.update(bag="/data/run1", namespace="front")
    actions = mod._actions(_context(**args))
    cmds = [" ".join(str(part[0].text) if isinstance(part, list) else str(part) for part in a.cmd)
            for a in actions if hasattr(a, "cmd")]
    record = next(c for c in cmds if " record " in c)
    assert "-o /data/run1_ivfusion" in record
    for topic in ("/front/fused/image", "/front/detections", "/front/status", "/diagnostics"):
        assert topic in record
    with pytest.raises(RuntimeError, match="needs bag"):
        mod._actions(_context(**{**args, "bag": ""}))


def test_demo_launch_uses_the_demo_parameters() -> None:
    mod = _load("demo.launch.py")
    args = _defaults(mod)
    _, fusion = mod._actions(_context(**args))
    launch_args = dict(fusion.launch_arguments)
    assert launch_args["params_file"].endswith("config/demo.yaml")
