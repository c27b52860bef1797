"""Generates the Python stubs (messages, .pyi types and gRPC services) from protos/.

Usage: python protos/generate.py [OUTPUT_DIR]   (default: the repository root)

The stubs land in the `aftersales` package, imported by both the server and the client. Only
this script writes them; tests/test_protos.py fails when the committed stubs are stale.
"""

import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

PROTOS = pathlib.Path(__file__).resolve().parent
ROOT = PROTOS.parent
WELL_KNOWN = pathlib.Path(grpc_tools.__file__).parent / "_proto"


def generate(out: pathlib.Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in {pathlib.Path(s).parent for s in sources}:
        for level in [package, *package.parents][:-1]:
            (out / level / "__init__.py").touch()


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
