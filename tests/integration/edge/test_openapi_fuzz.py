"""Schemathesis against the live edge, driven by the served /openapi.json.

Generated requests (valid and invalid) for every operation must never get a server
error: bad input is a 400 with a JSON google.rpc.Status, unknown things are 404. Admin
operations run with the admin key, the rest with the metered test key; the stream is
left out because it never ends by design.
"""

from __future__ import annotations

import re

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

ADMIN = re.compile(r"^/v1/admin")


def fuzz_operation(operation, base_url: str, headers: dict[str, str]) -> None:
    """Generated cases for one operation: never a server error, always JSON."""

    @given(case=operation.as_strategy())
    @settings(max_examples=20, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=20)
        case.validate_response(response, checks=[not_a_server_error])
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith("application/json"), (case.path, response.status_code)

    check()


def test_generated_requests_get_no_server_errors(edge):
    schema = schemathesis.openapi.from_url(f"{edge.http_url}/openapi.json")
    schema.config.base_url = edge.http_url
    operations = [result.ok() for result in schema.get_all_operations()]
    tested = []
    for operation in operations:
        if operation.path.endswith(":stream"):
            continue
        fuzz_operation(operation, edge.http_url,
                       edge.admin_auth if ADMIN.match(operation.path) else edge.auth)
        tested.append(operation.path)
    assert len(tested) >= 30, tested
