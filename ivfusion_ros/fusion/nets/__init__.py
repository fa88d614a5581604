"""Fusion networks: a registry of architectures by name with size configs, their losses and weight files.

``create_net("amfusion-s")`` builds a network; :mod:`~ivfusion_ros.fusion.nets.weights` saves and loads
weight files with metadata; :mod:`~ivfusion_ros.fusion.learned` runs them as fusion variants.
"""

from ivfusion_ros.fusion.nets.registry import NetInfo, create_net, list_nets, net_info, register_net

__all__ = ["NetInfo", "create_net", "list_nets", "net_info", "register_net"]
