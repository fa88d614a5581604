"""Fusion variants and their registry."""

from ivfusion_ros.fusion.base import Fuser, FusionContext, LuminanceFuser
from ivfusion_ros.fusion.registry import FuserInfo, create_fuser, fuser_info, list_fusers, register_fuser

__all__ = [
    "Fuser",
    "FuserInfo",
    "FusionContext",
    "LuminanceFuser",
    "create_fuser",
    "fuser_info",
    "list_fusers",
    "register_fuser",
]
