"""Generates the Python stubs (messages, gRPC services and their .pyi types) from protos/.

Usage: python protos/generate.py [OUTPUT_DIR]   (default: the repository root)

The stubs land in the `aftersales` package, imported by both the server and the client, with a
copy of each .proto beside them (package data: the wheel carries the contract). Only this script
writes them; tests/test_protos.py fails when the committed stubs or copies are stale.

The .pyi files come from mypy-protobuf (`protoc-gen-mypy` for the messages, `protoc-gen-mypy_grpc`
for the services), found next to the running interpreter: run this with the project's venv.
`aftersales/py.typed` marks the package as typed (PEP 561).

The vendored google/ protos are not generated: googleapis-common-protos ships their stubs. The
vendored buf/validate/validate.proto is, into the `buf` package.
"""

import pathlib
import shutil
import sys

import grpc_tools
from grpc_tools import protoc

PROTOS = pathlib.Path(__file__).resolve().parent
ROOT = PROTOS.parent
WELL_KNOWN = pathlib.Path(grpc_tools.__file__).parent / "_proto"
# Not resolved: in a venv, sys.executable is a symlink and the plugins sit next to the link.
BIN = pathlib.Path(sys.executable).parent
PLUGINS = ("protoc-gen-mypy", "protoc-gen-mypy_grpc")
# The contract, and the protovalidate rules it imports: no package on PyPI ships
# buf.validate.validate_pb2 for google.protobuf (protovalidate 2.x carries its own, for another
# runtime), so it is generated here like the stubs, as protovalidate's documentation does.
GENERATED = ("aftersales", "buf")


def _plugin(name: str) -> pathlib.Path:
    for candidate in (BIN / name, BIN / f"{name}.exe"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{name} not found in {BIN}: install the dev extra (mypy-protobuf)")


def generate(out: pathlib.Path) -> None:
    sources = sorted(
        str(p.relative_to(PROTOS)) for top in GENERATED for p in (PROTOS / top).rglob("*.proto")
    )
    args = [
        "protoc",
        *(f"--plugin={name}={_plugin(name)}" for name in PLUGINS),
        f"-I{PROTOS}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # The contract ships with the package, each .proto beside its stubs (as googleapis-common-protos
    # ships google/api and google/rpc): a consumer gets the exact protos of the version it installs.
    for source in sources:
        shutil.copyfile(PROTOS / source, out / source)
    packages = {pathlib.Path(s).parent for s in sources}
    for package in packages:
        for level in [package, *package.parents][:-1]:
            (out / level / "__init__.py").touch()
    for top in {package.parts[0] for package in packages}:
        (out / top / "py.typed").touch()


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
