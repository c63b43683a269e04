"""Generate the API reference from the proto comments (never written by hand).

Reads `build/api.pb` (descriptor with source info, from infra/gen_protos.py) and writes
- `build/llms.txt`: every endpoint, one paragraph each, with a curl example;
- `build/llms-full.txt` and `docs/api.md`: the same plus request and response fields.
Envoy serves the first two at /llms.txt and /llms-full.txt; docs/api.md is committed and a
test fails when it no longer matches the protos.
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR = ROOT / "build" / "api.pb"
INTERNAL_FILES = ("ktape/billing/v1/metering.proto",)
SERVICES = ("ktape.marketdata.v1.MarketDataService", "ktape.billing.v1.BillingService",
            "ktape.billing.v1.BillingAdminService")
# Tickers that exist in `make demo` (the simulator's seed 42, 200 markets): one bucket of
# the mutually exclusive event KXHIGHNY-26NOV24, so every curl example works as printed.
EXAMPLES = {
    "ticker": "KXHIGHNY-26NOV24-B47.5", "event_ticker": "KXHIGHNY-26NOV24",
    "series_ticker": "KXHIGHNY", "key_id": "ab12cd34", "account_id": "acct_123",
}


def _comments(fd: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {tuple(loc.path): "\n".join(line.strip() for line in
                                        loc.leading_comments.strip().splitlines())
            for loc in fd.source_code_info.location if loc.leading_comments}


def _http(method: descriptor_pb2.MethodDescriptorProto) -> tuple[str, str, str]:
    rule = http_pb2.HttpRule()
    raw = method.options.SerializeToString()
    opts = descriptor_pb2.MethodOptions.FromString(raw)
    if not opts.HasExtension(annotations_pb2.http):
        return "", "", ""
    rule = opts.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return verb.upper(), getattr(rule, verb), rule.body


def _fields(messages: dict[str, tuple], name: str) -> list[str]:
    fd, index, message = messages[name]
    comments = _comments(fd)
    lines = []
    for i, field in enumerate(message.field):
        doc = comments.get((4, index, 2, i), "").replace("\n", " ")
        kind = field.type_name.lstrip(".") if field.type_name else \
            descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)[5:].lower()
        repeated = "repeated " if field.label == field.LABEL_REPEATED else ""
        lines.append(f"  - `{field.name}` ({repeated}{kind}): {doc}")
    return lines


def render(full: bool) -> str:
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    messages: dict[str, tuple] = {}
    for fd in fds.file:
        if fd.name in INTERNAL_FILES:
            continue  # internal RPCs (not routed by Envoy) are not public API
        for index, message in enumerate(fd.message_type):
            messages[f"{fd.package}.{message.name}"] = (fd, index, message)
    out = ["# ktape API", "",
           "> Complete Kalshi order-book history, reconstructable to any instant, over REST "
           "(JSON) and gRPC on one port (default 8080). Auth: `Authorization: Bearer <key>`. "
           "Prices are dollar strings with 4 decimals, quantities contract strings with 2; "
           "times RFC 3339 UTC; ranges [start_time, end_time); paging per AIP-158 "
           "(page_size, page_token, next_page_token). Errors are google.rpc.Status JSON. "
           "Streams are newline-delimited JSON, or Server-Sent Events with "
           "`Accept: text/event-stream`; each ends with an `end` message. Market-data calls "
           "cost credits (see GET /v1/account); out of credits or over the rate limit is "
           "429 RESOURCE_EXHAUSTED with QuotaFailure/RetryInfo details.", ""]
    for fd in fds.file:
        comments = _comments(fd)
        for s_index, service in enumerate(fd.service):
            full_name = f"{fd.package}.{service.name}"
            if full_name not in SERVICES:
                continue
            out += [f"## {service.name} (`{full_name}`)", "",
                    comments.get((6, s_index), ""), ""]
            for m_index, method in enumerate(service.method):
                verb, path, body = _http(method)
                doc = comments.get((6, s_index, 2, m_index), "")
                example_path = path
                for key, value in EXAMPLES.items():
                    example_path = example_path.replace("{" + key + "}", value)
                stream = " (server stream, NDJSON over REST)" if method.server_streaming else ""
                out += [f"### {verb} {path} — `{method.name}`{stream}", "", doc, ""]
                curl = 'curl -s -H "Authorization: Bearer $KTAPE_KEY" '
                if verb == "GET":
                    curl += f"'http://localhost:8080{example_path}'"
                else:
                    curl += f"-X {verb} -d '{{}}' 'http://localhost:8080{example_path}'"
                out += ["```", curl, "```", ""]
                if full:
                    out += [f"Request `{method.input_type.lstrip('.')}`"
                            + (f" (body: `{body}`)" if body else "") + ":"]
                    out += _fields(messages, method.input_type.lstrip(".")) or ["  (no fields)"]
                    out += ["", f"Response `{method.output_type.lstrip('.')}`:"]
                    out += _fields(messages, method.output_type.lstrip(".")) or ["  (no fields)"]
                    out += [""]
    if full:
        out += ["## Messages", ""]
        for name in sorted(messages):
            if name.startswith(("ktape.",)):
                out += [f"### {name}", ""] + (_fields(messages, name) or ["  (no fields)"]) + [""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    """Default: write build/llms*.txt. `--write-docs`: also docs/api.md.
    `--check`: fail when the committed docs/api.md differs from the protos."""
    build = ROOT / "build"
    (build / "llms.txt").write_text(render(full=False))
    full = render(full=True)
    (build / "llms-full.txt").write_text(full)
    api_md = ROOT / "docs" / "api.md"
    if "--check" in sys.argv:
        if not api_md.exists() or api_md.read_text() != full:
            print("docs/api.md is stale: run `make docs`", file=sys.stderr)
            return 1
        print("docs/api.md matches the protos")
    if "--write-docs" in sys.argv:
        api_md.write_text(full)
        print("wrote docs/api.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
