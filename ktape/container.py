"""`python -m ktape.container questdb|envoy`: one ktape component as a container's process.

Why: `ktape up` supervises every component on one machine; in a container image
(deploy/Containerfile) each pod runs one. The Python services start as `python -m queryd`
and so on; QuestDB and Envoy need their config written first, by the same code `ktape up`
uses (ktape/runtime/questdb.py, ktape/envoy.py: one QuestDB server.conf writer, one Envoy
template), and then this process becomes the server (exec), so the container runtime
signals and reaps the server itself.

Addresses come from the same KTAPE_* variables as everywhere: in the QuestDB pod
KTAPE_QUESTDB_HTTP / KTAPE_QUESTDB_PG are the bind addresses (0.0.0.0:port); in the Envoy
pod KTAPE_QUERYD_ADDR and the others name the Kubernetes Services it forwards to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ktape.config import Settings
from ktape.entrypoint import settings_or_report
from ktape.envoy import render_for_settings
from ktape.runtime.pins import REPO_ROOT
from ktape.runtime.questdb import server_command, write_server_conf
from ktape.stack import envoy_command

COMPONENTS = ("questdb", "envoy")
# A pod's server listens on every interface of the pod (its Service sends traffic there).
POD_LISTEN_ADDRESS = "0.0.0.0"


def questdb_argv(settings: Settings) -> list[str]:
    """Write server.conf under $KTAPE_DATA_DIR/questdb (the pod's volume); QuestDB's argv."""
    root = settings.questdb_dir
    (root / "log").mkdir(parents=True, exist_ok=True)
    write_server_conf(root, settings.questdb_http, settings.questdb_pg, memory_limited=False)
    return server_command(root)


def envoy_argv(settings: Settings) -> list[str]:
    """Render envoy/envoy.yaml.tmpl for this pod (listener on all interfaces, access log to
    stdout for the container runtime); Envoy's argv."""
    config_dir = settings.data_dir / "envoy"
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "envoy.yaml"
    path.write_text(render_for_settings(
        settings, descriptor_path=REPO_ROOT / "build" / "api.pb",
        access_log_path="/dev/stdout", listen_address=POD_LISTEN_ADDRESS))
    return envoy_command(path)


def component_argv(component: str, settings: Settings) -> list[str]:
    if component == "questdb":
        return questdb_argv(settings)
    if component == "envoy":
        return envoy_argv(settings)
    raise ValueError(f"unknown component {component!r}: expected one of {', '.join(COMPONENTS)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in COMPONENTS:
        print(f"usage: python -m ktape.container {{{'|'.join(COMPONENTS)}}}", file=sys.stderr)
        return 2
    settings = settings_or_report(f"container {args[0]}")
    if settings is None:
        return 2
    command = component_argv(args[0], settings)
    sys.stdout.flush()
    os.execv(command[0], command)  # never returns: the server becomes the container's process
    return 0  # pragma: no cover


if __name__ == "__main__":
    raise SystemExit(main())
