"""Fails when the protos break the contract as last released (`buf breaking`, rules in buf.yaml).

Usage: python protos/breaking.py [REF]

The baseline is REF if given, else the newest release tag (`v*`) reachable from HEAD, else (until
the first release) the commit before the change: HEAD while protos/ has uncommitted changes (a
change being made), HEAD~1 otherwise (the change just committed; its first parent, so on a merge
commit the whole merged branch is checked). Its protos/ is read with `git archive`, so a worktree,
a tag far back and a partial history all work, and its imports resolve from the files vendored in
that commit.

A baseline without protos/buf.yaml predates the guard (its imports may not resolve, and its
placeholders were never a contract): the check says so and passes. So does a clone without the
previous commit (a shallow one): there is nothing to compare with.
"""

import pathlib
import subprocess
import sys

PROTOS = pathlib.Path(__file__).resolve().parent
ROOT = PROTOS.parent
# Not resolved: in a venv, sys.executable is a symlink and buf (buf-bin) sits next to the link.
BUF = pathlib.Path(sys.executable).parent / "buf"


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True)


def baseline() -> str | None:
    """The newest release tag reachable from HEAD, else the commit before the change (None if
    there is no such commit)."""
    tag = _git("describe", "--tags", "--abbrev=0", "--match", "v*", "HEAD")
    if tag.returncode == 0:
        return tag.stdout.decode().strip()
    if _git("status", "--porcelain", "--", "protos").stdout.strip():
        return "HEAD"
    if _git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}").returncode == 0:
        return "HEAD~1"
    return None


def main(ref: str | None) -> int:
    ref = ref or baseline()
    if ref is None:
        print("buf breaking: skipped, no release tag and no previous commit to compare with")
        return 0
    if _git("cat-file", "-e", f"{ref}:protos/buf.yaml").returncode != 0:
        print(f"buf breaking: skipped, {ref} has no protos/buf.yaml (it predates the guard)")
        return 0
    archive = _git("archive", "--format=tar", ref, "protos")
    if archive.returncode != 0:
        raise SystemExit(archive.stderr.decode())
    against = "-#format=tar,subdir=protos"
    done = subprocess.run(
        [BUF, "breaking", str(PROTOS), "--against", against], input=archive.stdout
    )
    if done.returncode == 0:
        print(f"buf breaking: no breaking change since {ref}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
