"""The kernel layer: every service reads netlink, sysfs and ``bpf()`` through these
modules, never with code of its own (the plumber's changes to the kernel are its own).

- ``rtnl``: netlink dumps of links, addresses and routes (a small decoder of our own),
  into ``links``' records;
- ``uplinks``: the default-route interfaces, from those routes;
- ``tc``: the qdisc and filter dumps that find cls_bpf filters;
- ``sysfs`` and ``pciids``: PCI, NUMA, SR-IOV and RDMA facts under ``/sys``, names from
  pci.ids;
- ``netns``: running a call inside a network namespace, on a thread;
- ``bpf``: the ``bpf()`` system call for the TCX programs.

What a service makes of these facts (discovery's inventory, the plumber's moves,
topology's report) stays in that service.
"""
