"""Free loopback ports for the peers the tests start."""

from __future__ import annotations

import socket


def port_is_free(host: str, port: int, udp: bool = False) -> bool:
    """True when ``port`` can be bound on ``host`` (TCP, and UDP too when asked)."""
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(hosts: tuple[str, ...] = ("127.0.0.1",), udp: bool = False) -> int:
    """A port that is free on every one of ``hosts`` at once.

    The kernel picks a candidate on the first host; the others are checked by
    binding, so one port number can serve several loopback addresses (like port 25
    on several machines).
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        if all(port_is_free(h, port, udp) for h in hosts):
            return port
    raise RuntimeError(f"no port free on all of {hosts}")
