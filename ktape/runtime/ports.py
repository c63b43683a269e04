"""Free loopback ports for private server instances (tests, benchmarks, demos)."""

from __future__ import annotations

import socket

from ktape.sharding import PORT_STRIDE


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago.

    Only for third-party servers that cannot bind port 0 and report it (QuestDB, Envoy);
    our own servers bind 0 and report the port they got.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_base_port(instances: int, host: str = "127.0.0.1") -> int:
    """A port that, with the ports of `instances - 1` more replicas or shards above it
    (ktape/sharding.py: base + 100 i), was free a moment ago."""
    for _ in range(200):
        base = free_port(host)
        if base + PORT_STRIDE * (instances - 1) > 65535:
            continue
        try:
            for i in range(1, instances):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((host, base + PORT_STRIDE * i))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no free base port for {instances} instances")
