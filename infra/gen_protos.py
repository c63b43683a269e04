"""Generate Python stubs and the Envoy descriptor from proto/ (run at install).

Outputs (all git-ignored, never edited by hand):
- `ktape/marketdata/v1/*_pb2.py|.pyi|_pb2_grpc.py`, `ktape/billing/v1/...` — imported as
  `from ktape.marketdata.v1 import marketdata_pb2`;
- `build/api.pb` — FileDescriptorSet for Envoy's gRPC-JSON transcoder, with imports and
  source info, plus google/rpc status + error details (so `convert_grpc_status` can render
  details) and grpc.health.v1 (so health checks route through Envoy);
- `build/proto-deps/google/{api,rpc}/*.proto` — the googleapis protos from the installed
  `googleapis-common-protos` wheel, for buf (the Buf Schema Registry is not reachable).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc_tools
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
BUILD_DIR = ROOT / "build"
DEPS_DIR = BUILD_DIR / "proto-deps"
DESCRIPTOR = BUILD_DIR / "api.pb"
OPENAPI = BUILD_DIR / "openapi.json"
OPENAPI_PLUGIN = ROOT / ".tools" / "go" / "bin" / "protoc-gen-openapiv2"
GOOGLEAPIS_ROOT = Path(annotations_pb2.__file__).resolve().parents[2]  # site-packages
WELL_KNOWN_ROOT = Path(grpc_tools.__file__).resolve().parent / "_proto"
GOOGLE_DEPS = [
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/api/field_behavior.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/rpc/code.proto",
]


def _protoc(args: list[str]) -> None:
    include = [f"-I{PROTO_DIR}", f"-I{DEPS_DIR}", f"-I{WELL_KNOWN_ROOT}"]
    code = protoc.main(["grpc_tools.protoc", *include, *args])
    if code != 0:
        raise SystemExit(f"protoc failed ({code}) for: {' '.join(args)}")


def copy_deps() -> None:
    for rel in GOOGLE_DEPS:
        src = GOOGLEAPIS_ROOT / rel
        dst = DEPS_DIR / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def main() -> int:
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if not sources:
        print("no protos under proto/", file=sys.stderr)
        return 1
    BUILD_DIR.mkdir(exist_ok=True)
    copy_deps()
    _protoc([f"--python_out={ROOT}", f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}",
             *sources])
    _protoc(["--include_imports", "--include_source_info",
             f"--descriptor_set_out={DESCRIPTOR}", *sources,
             "google/rpc/status.proto", "google/rpc/error_details.proto"])
    # grpc.health.v1 ships compiled in grpcio-health-checking (no .proto file): append its
    # FileDescriptorProto so Envoy can route and transcode the health service too.
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    health = descriptor_pb2.FileDescriptorProto.FromString(health_pb2.DESCRIPTOR.serialized_pb)
    if all(f.name != health.name for f in fds.file):
        fds.file.append(health)
    DESCRIPTOR.write_bytes(fds.SerializeToString())
    generate_openapi(sources)
    print(f"generated stubs for {len(sources)} files, {DESCRIPTOR.relative_to(ROOT)} and "
          f"{OPENAPI.relative_to(ROOT)}")
    return 0


def generate_openapi(sources: list[str]) -> None:
    """One merged OpenAPI (Swagger 2.0) document from the google.api.http annotations."""
    if not OPENAPI_PLUGIN.exists():
        raise SystemExit(f"{OPENAPI_PLUGIN} missing: run infra/install_openapiv2.sh (make install)")
    out_dir = BUILD_DIR / "openapi"
    out_dir.mkdir(exist_ok=True)
    # The plugin insists on Go import paths; ours are nominal (no Go code is generated).
    go_paths = ",".join(f"M{src}=ktape.dev/gen/{Path(src).parent}" for src in sources)
    _protoc([f"--plugin=protoc-gen-openapiv2={OPENAPI_PLUGIN}", f"--openapiv2_out={out_dir}",
             "--openapiv2_opt=allow_merge=true,merge_file_name=ktape,json_names_for_fields=false,"
             f"enums_as_ints=false,{go_paths}",
             *sources])
    shutil.copyfile(out_dir / "ktape.swagger.json", OPENAPI)


if __name__ == "__main__":
    sys.exit(main())
