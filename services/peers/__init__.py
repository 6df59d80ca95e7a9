"""Stand-ins for knd's node-local peers: kubelet (DRA gRPC client) and a container
runtime (NRI). ``knd demo``, the benchmarks and the tests play those roles with them
over the real sockets."""
