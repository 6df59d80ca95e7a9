"""How wide a line of SVG text will be, and wrapping it to a width.

The SVG names ``sans-serif`` and the viewer picks the font, so there is no exact
width to measure; these advances (in em) are DejaVu Sans's, rounded up, and
DejaVu is wider than Arial, Helvetica or Liberation Sans, so a line that fits by
this estimate fits in the usual sans-serif fonts too. Bold is wider still.
"""

from __future__ import annotations

_ADVANCE: dict[str, float] = {
    **dict.fromkeys("ijl'|", 0.28), **dict.fromkeys(" .,:;!", 0.34),
    **dict.fromkeys("ft()[]/\\-", 0.40), "r": 0.42, "I": 0.30, "J": 0.30,
    **dict.fromkeys("sz\"", 0.53), **dict.fromkeys("cvxyk_?*", 0.60),
    **dict.fromkeys("abdeghnopqu0123456789#$+<=>^~", 0.64),
    **dict.fromkeys("FLPTYZ", 0.62), **dict.fromkeys("ABEKRSVX&", 0.70),
    **dict.fromkeys("CDGHNOQU", 0.79), **dict.fromkeys("w%", 0.82),
    **dict.fromkeys("mMW@", 1.0),
}
DEFAULT_ADVANCE = 0.80
"""Any other character (non-ASCII included): a wide one."""
BOLD = 1.12


def width(text: str, size: float, bold: bool = False) -> float:
    """An upper estimate of ``text``'s width in pixels at font size ``size``."""
    em = sum(_ADVANCE.get(c, DEFAULT_ADVANCE) for c in text)
    return em * size * (BOLD if bold else 1.0)


def wrap(text: str, size: float, room: float, bold: bool = False) -> list[str]:
    """``text`` in lines no wider than ``room``: broken at spaces, and a word that is
    too long on its own is cut where it must be."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if width(candidate, size, bold) <= room:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while width(line, size, bold) > room and len(line) > 1:
            cut = len(line) - 1
            while cut > 1 and width(line[:cut], size, bold) > room:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    if line or not lines:
        lines.append(line)
    return lines
