"""DRA allocation as the kube-scheduler does it, to explain it: which devices a claim
would get on each node, and if none, what ruled each device out (``knd claim explain``),
and templates that pair each GPU with its nearest NICs (``knd claim align``).

objects: the API objects read (any resource.k8s.io version); cluster: reading them from
the API server; pools: a node's devices; celenv: selectors in the DRA CEL environment;
search: one claim on one node; explain: every claim on every node, with reasons;
align: GPU-NIC pairs and their templates.
"""
