"""services.common.backoff: doubling up to the cap, jitter within bounds, reset."""

from __future__ import annotations

import pytest

from services.common.backoff import Backoff


def test_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_jitter_stays_between_half_and_all_of_the_delay() -> None:
    b = Backoff(1.0, 8.0, jitter=True)
    for delay in (1.0, 2.0, 4.0, 8.0, 8.0):
        wait = b.next()
        assert delay / 2 <= wait <= delay


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="first <= most"):
        Backoff(2.0, 1.0)
