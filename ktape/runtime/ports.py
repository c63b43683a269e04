"""Free loopback ports for private server instances (tests, benchmarks, demos)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago.

    Only for third-party servers that cannot bind port 0 and report it (QuestDB, Envoy);
    our own servers bind 0 and report the port they got.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
