"""knd's services: discovery, publisher, plumber, kubelet_gateway, and what they share."""

from services.common import lean as _lean

_lean.install()  # before any module of ours imports nats: see lean.NatsWithoutWebsockets
