"""knd's services: discovery, publisher, plumber, kubelet_gateway, and what they share."""
