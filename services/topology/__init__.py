"""GPU <-> NIC affinity of a node, from sysfs alone (the computation behind ``knd topology``).

``pci`` reads the GPUs, NICs and their bridge paths; ``affinity`` classifies each
pair (PIX/PXB/PHB/NODE/SYS) and picks each GPU's NIC; ``render`` draws the result
as text, JSON or SVG. No I/O beyond reading sysfs, so it runs on fixture trees.
"""
