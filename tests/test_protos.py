"""The committed stubs are what protos/generate.py makes from the committed .proto files."""

import filecmp
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _files(root: pathlib.Path) -> set[pathlib.Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_are_up_to_date(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True
    )
    fresh, committed = tmp_path / "aftersales", ROOT / "aftersales"
    assert _files(fresh) == _files(committed), "stub files differ: run `make protos`"
    stale = [
        str(p) for p in _files(fresh) if not filecmp.cmp(fresh / p, committed / p, shallow=False)
    ]
    assert stale == [], f"stale stubs {stale}: run `make protos` and commit"
