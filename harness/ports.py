"""Loopback ports for the processes a test, benchmark or chaos scenario starts."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bindable(port: int) -> bool:
    """Whether `port` on 127.0.0.1 can be bound right now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(offsets: Iterable[int], *, low: int = 20_000, high: int = 28_000) -> int:
    """A base port B with B + each of `offsets` free, for a set of processes that derive their ports from one.

    Chosen below the ephemeral range (32768+), so no outgoing connection takes one of them meanwhile.
    """
    wanted = sorted(set(offsets))
    for _ in range(200):
        base = random.randrange(low, high)
        if all(bindable(base + offset) for offset in wanted):
            return base
    raise RuntimeError(f"no free block of ports at offsets {wanted}")
