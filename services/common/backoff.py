"""Waiting between tries: doubling delays up to a cap, optionally jittered.

Every retry loop of knd (asking a service that is starting, reconnecting to the
runtime, restarting a child, re-writing the pool) waits the same way; jitter keeps
restarted agents on many nodes from retrying in step against the API server.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float, most: float, *, jitter: bool = False) -> None:
        if not 0 < first <= most:
            raise ValueError(f"backoff needs 0 < first <= most, got {first} and {most}")
        self.first, self.most, self.jitter = first, most, jitter
        self.delay = first
        """The delay the next wait is based on."""

    def next(self) -> float:
        """The next wait (between half and all of the delay with jitter); doubles the delay."""
        wait = self.delay / 2 + random.uniform(0, self.delay / 2) if self.jitter else self.delay
        self.delay = min(self.delay * 2, self.most)
        return wait

    def reset(self) -> None:
        """After a success: the next failure waits ``first`` again."""
        self.delay = self.first

    async def sleep(self) -> float:
        """Wait the next delay; returns how long that was."""
        import anyio  # here: knd up's keeper uses the delays without an event loop

        wait = self.next()
        await anyio.sleep(wait)
        return wait
