"""Weight files with metadata: what network they are for, how it was configured and trained.

A ``.pt`` file is a ``torch.save`` of a plain dict (loaded with ``weights_only=True``)::

    {"format": "ivfusion-weights", "format_version": 1,
     "variant": "amfusion-s",            # network registry name
     "family": "amfusion",               # fusion variant that runs it
     "config": {...},                    # architecture keyword arguments (rebuilds the network)
     "config_hash": "3f2a...",           # sha256 of the canonical JSON of variant + config (16 hex digits)
     "meta": {...},                      # training data, command, epochs, loss weights, metrics, ...
     "state_dict": {...}}

A ``.onnx`` file made by ``ivfusion export`` carries the same header (without the state dict) as JSON in
the model's metadata under the key ``ivfusion``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ivfusion_ros.errors import ModelError
from ivfusion_ros.fusion.nets.registry import create_net, list_nets, net_info

__all__ = ["FORMAT", "WeightsFile", "build_from_weights", "config_hash", "load_weights", "read_onnx_header",
           "save_weights"]

FORMAT = "ivfusion-weights"
FORMAT_VERSION = 1


def config_hash(variant: str, config: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the canonical JSON of ``variant`` and ``config``."""
    blob = json.dumps({"variant": variant, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class WeightsFile:
    """A loaded weights file (``state_dict`` is empty for ONNX headers)."""

    path: Path
    variant: str
    family: str
    config: dict[str, Any]
    config_hash: str
    meta: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "variant": self.variant, "family": self.family,
                "config": self.config, "config_hash": self.config_hash, "meta": self.meta}


def save_weights(path: str | Path, net: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Write ``net``'s weights with its registry name, config, config hash and ``meta``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    variant, config = net.variant, dict(net.config)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "variant": variant, "family": net.family,
            "config": config, "config_hash": config_hash(variant, config), "meta": dict(meta or {}),
            "state_dict": state}
    torch.save(blob, path)
    return path


def _check_header(path: Path, blob: Any, families: tuple[str, ...] | None) -> WeightsFile:
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path}: not an ivfusion weights file (no {FORMAT!r} header)")
    if blob.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(f"{path}: weights format version {blob.get('format_version')} is newer than this "
                         f"ivfusion_ros supports ({FORMAT_VERSION})")
    try:
        wf = WeightsFile(path, str(blob["variant"]), str(blob["family"]), dict(blob["config"]),
                         str(blob["config_hash"]), dict(blob.get("meta") or {}),
                         dict(blob.get("state_dict") or {}))
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{path}: incomplete weights header ({err})") from None
    if wf.variant not in list_nets():
        raise ModelError(f"{path}: weights are for network {wf.variant!r}, which this version does not know "
                         f"(known: {', '.join(list_nets())})")
    if families is not None and wf.family not in families:
        ok = [n for n in list_nets() if net_info(n).family in families]
        raise ModelError(f"{path}: weights are for network {wf.variant!r} (variant {wf.family!r}), expected "
                         f"one of: {', '.join(ok)}")
    if config_hash(wf.variant, wf.config) != wf.config_hash:
        raise ModelError(f"{path}: config hash mismatch (file damaged or edited by hand)")
    return wf


def load_weights(path: str | Path, families: tuple[str, ...] | None = None) -> WeightsFile:
    """Read and check a ``.pt`` weights file.

    Args:
        path: the file.
        families: accepted fusion variants (e.g. ``("amfusion",)``); ``None`` accepts any.

    Raises:
        ModelError: missing or unreadable file, not a weights file, unknown network, wrong variant, config hash
            mismatch. The message names the file (and, for a wrong variant, the accepted networks).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean the same to the user
        raise ModelError(f"{path}: cannot read weights file (corrupt or not a torch file): "
                         f"{type(err).__name__}: {str(err)[:200]}") from None
    return _check_header(path, blob, families)


def read_onnx_header(path: str | Path, families: tuple[str, ...] | None = None) -> WeightsFile:
    """The metadata of an ONNX model exported by ``ivfusion export`` (checked like :func:`load_weights`)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        raw = sess.get_modelmeta().custom_metadata_map.get("ivfusion")
    except Exception as err:
        raise ModelError(f"{path}: cannot load ONNX model: {type(err).__name__}: {str(err)[:200]}") from None
    if raw is None:
        raise ModelError(f"{path}: ONNX model has no ivfusion metadata (export it with `ivfusion export`)")
    try:
        blob = json.loads(raw)
    except ValueError:
        raise ModelError(f"{path}: ONNX model has unreadable ivfusion metadata") from None
    return _check_header(path, blob, families)


def build_from_weights(wf: WeightsFile, **extra: Any) -> nn.Module:
    """Rebuild the network of ``wf`` and load its state dict (strict: any mismatch is a ModelError)."""
    net = create_net(wf.variant, **{**wf.config, **extra})
    try:
        net.load_state_dict(wf.state_dict, strict=True)
    except RuntimeError as err:
        raise ModelError(f"{wf.path}: weights do not match network {wf.variant!r}: {str(err)[:300]}") from None
    return net
