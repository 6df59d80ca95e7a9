"""CEL, from the binding's compiled core alone: its package ``__init__`` also loads an
interactive shell (prompt_toolkit, rich; ~25 MB and 0.2 s) that knd never uses."""

from __future__ import annotations

from services.common import lean

lean.empty_package("cel")

from cel.cel import Context, Program  # noqa: E402
from cel.cel import compile as compile_expression  # noqa: E402

__all__ = ["CelError", "Context", "Program", "compile_checked", "compile_expression"]

MAX_EXPRESSION = 10 * 1024
"""Characters, as the API allows a DeviceClass selector's expression. The CEL library
panics (a BaseException, not an error) on a line past 65535 characters."""


class CelError(ValueError):
    """An expression that does not compile; the text names what it is and where."""


def compile_checked(expression: str, what: str) -> Program:
    """``expression`` compiled, or :class:`CelError` starting with ``what``."""
    if len(expression) > MAX_EXPRESSION:
        raise CelError(f"{what}: {len(expression)} characters, more than the "
                       f"{MAX_EXPRESSION} allowed")
    try:
        return compile_expression(expression)
    except Exception as exc:
        raise CelError(f"{what}: {exc}") from None
    except BaseException as exc:  # the library's panic (pyo3 PanicException)
        if type(exc).__name__ != "PanicException":
            raise
        raise CelError(f"{what}: the CEL compiler failed on it: {exc}") from None
