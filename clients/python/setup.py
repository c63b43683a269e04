"""Build hook: generate the gRPC stubs from ktape's protos into the package.

The stubs live under `ktape_client._gen` and their imports are rewritten to that prefix,
so the client never collides with a `ktape` package installed beside it. The protos are
read from ../../proto (the repository this directory belongs to).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
GEN = "ktape_client/_gen"


def generate(out_root: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    target = out_root / GEN
    target.mkdir(parents=True, exist_ok=True)
    includes = [str(PROTO_ROOT), str(Path(grpc_tools.__file__).parent / "_proto")]
    from google.api import annotations_pb2  # its wheel ships google/api/*.proto too

    includes.append(str(Path(annotations_pb2.__file__).parent.parent.parent))
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    args = ["protoc", *(f"-I{i}" for i in includes), f"--python_out={target}",
            f"--grpc_python_out={target}", *sources]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in target.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"^from ktape\.", "from ktape_client._gen.ktape.", text, flags=re.M)
        path.write_text(text)
    for directory in [target, *[p for p in target.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()


class BuildWithStubs(build_py):
    def run(self) -> None:
        generate(Path(self.build_lib))
        super().run()


if __name__ == "__main__":
    if "develop" in sys.argv or "editable_wheel" in sys.argv:
        generate(HERE / "src")
    setup(cmdclass={"build_py": BuildWithStubs})
