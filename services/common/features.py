"""``--feature-gates``: DRANET's gates, accepted where knd can honour them.

DRANET has two alpha gates. ``PersistentResourceSliceAttributes`` keeps a
claimed device published with the attributes it had when it left for a pod:
knd always does that (its plumber freezes them), so either value is accepted.
``DRAListTypeAttributes`` publishes list-typed attributes, which knd's inventory
does not have: ``=true`` is refused rather than silently ignored.
"""

from __future__ import annotations

import argparse

GATES = {"PersistentResourceSliceAttributes": (True, False), "DRAListTypeAttributes": (False,)}
"""Gate -> the values knd can honour."""


def feature_gates(text: str) -> dict[str, bool]:
    """``type=`` of ``--feature-gates``: ``Name=true,Other=false`` as DRANET takes it."""
    out: dict[str, bool] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in GATES:
            raise argparse.ArgumentTypeError(
                f"{name!r}: unknown feature gate (known: {', '.join(GATES)})")
        if not sep or value.strip().lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"{item!r}: expected {name}=true or {name}=false")
        on = value.strip().lower() == "true"
        if on not in GATES[name]:
            raise argparse.ArgumentTypeError(
                f"{name}={value.strip()}: not supported by knd (no list-typed attributes)")
        out[name] = on
    return out
