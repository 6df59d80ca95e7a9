"""DRA allocation as the kube-scheduler does it, to explain it: which devices a claim
would get on each node, and if none, what ruled each device out (``knd claim explain``).

objects: the API objects read (any resource.k8s.io version); pools: a node's devices;
celenv: selectors in the DRA CEL environment; search: one claim on one node;
explain: every claim on every node, with reasons.
"""
