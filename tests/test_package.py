"""The wheel carries the contract: each .proto of protos/ beside its stubs, byte for byte, so a
consumer gets the exact protos of the version it installs."""

import pathlib
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
# What the wheel is built from ([tool.setuptools] in pyproject.toml), copied so that the build
# leaves nothing in the working tree.
SOURCES = ["pyproject.toml", "README.md", "aftersales", "buf", "server", "client"]


def test_the_wheel_ships_every_proto_of_the_contract(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("aftersales-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name: archive.read(name) for name in archive.namelist() if name.endswith(".proto")
        }

    contract = {
        str(p.relative_to(PROTOS)): p.read_bytes()
        for top in ("aftersales", "buf")
        for p in (PROTOS / top).rglob("*.proto")
    }
    assert "aftersales/v1/entry.proto" in contract
    assert sorted(shipped) == sorted(contract)
    assert all(shipped[name] == contract[name] for name in contract)
