"""knd's NRI plugin: its own ttrpc and connection multiplexer, and the pod event handler."""

from services.kubelet_gateway.nri.handler import PlumberPodHandler, PodHandler, PodInfo
from services.kubelet_gateway.nri.plugin import NriPlugin, RegistrationError, run_nri

__all__ = ["NriPlugin", "PlumberPodHandler", "PodHandler", "PodInfo", "RegistrationError",
           "run_nri"]
