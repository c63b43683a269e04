"""Children's output: all of it to per-component files, warnings and errors on the console."""

from __future__ import annotations

import io
import json

from ktape import child_logs
from ktape.child_logs import ChildLogs, level_of


def test_levels_of_our_json_questdb_and_envoy_lines():
    assert level_of(json.dumps({"event": "x", "level": "warning"}))[0] == "warning"
    assert level_of("2026-12-01T11:11:05.152198Z I server-main extracted")[0] == "info"
    assert level_of("2026-12-01T11:11:54.887728Z E i.q.g.e.QueryProgress err")[0] == "error"
    assert level_of("[2026-12-01 12:00:00.123][12][warning][config] x")[0] == "warning"
    assert level_of("anything else")[0] == "info"
    assert level_of("{not json}")[0] == "info"


def test_everything_goes_to_the_file_only_warnings_and_errors_to_the_console(tmp_path):
    console = io.StringIO()
    logs = ChildLogs(tmp_path / "logs", console=console)
    logs("questdb", "2026-12-01T11:11:05.152198Z I server-main every 200 ms")
    logs("questdb", "2026-12-01T11:11:54.887728Z E i.q.g.e.QueryProgress err [id=1]")
    logs("queryd", json.dumps({"timestamp": "2026-12-01T12:00:01.5Z", "level": "info",
                               "event": "rpc.served", "component": "queryd"}))
    logs("queryd", json.dumps({"timestamp": "2026-12-01T12:00:02.5Z", "level": "warning",
                               "event": "store.unavailable", "component": "queryd",
                               "error": "refused"}))
    logs.close()
    assert len((tmp_path / "logs" / "questdb.log").read_text().splitlines()) == 2
    assert len((tmp_path / "logs" / "queryd.log").read_text().splitlines()) == 2
    shown = console.getvalue().splitlines()
    assert shown == ["questdb   2026-12-01T11:11:54.887728Z E i.q.g.e.QueryProgress err [id=1]",
                     "12:00:02 queryd    warning store.unavailable error=refused"]


def test_a_full_log_is_rotated_keeping_one_old_file(tmp_path, monkeypatch):
    monkeypatch.setattr(child_logs, "MAX_BYTES", 100)
    logs = ChildLogs(tmp_path, console=io.StringIO())
    for i in range(30):
        logs("envoy", f"line {i:03d} " + "x" * 20)
    logs.close()
    current = (tmp_path / "envoy.log").read_text().splitlines()
    old = (tmp_path / "envoy.log.1").read_text().splitlines()
    assert current[-1].startswith("line 029") and old and len(current) < 30
