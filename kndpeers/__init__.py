"""Stand-ins for knd's node-local peers: kubelet (DRA gRPC client) and a container
runtime (NRI). ``knd demo``, the benchmarks and the tests play those roles with them
over the real sockets.

Not part of any service: nothing under ``services/`` imports this package except the
``knd demo`` command (services/demo.py). It ships in the wheel only because ``knd demo``
does.
"""
