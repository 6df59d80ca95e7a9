"""CEL, from the binding's compiled core alone: its package ``__init__`` also loads an
interactive shell (prompt_toolkit, rich; ~25 MB and 0.2 s) that knd never uses."""

from __future__ import annotations

from services.common import lean

lean.empty_package("cel")

from cel.cel import Context, Program  # noqa: E402
from cel.cel import compile as compile_expression  # noqa: E402

__all__ = ["Context", "Program", "compile_expression"]
