"""A new environment starts with the bytecode its files already have elsewhere.

uv installs without compiling (compiling every package of a set takes ~30 s), so the first
``bentoml serve`` from a new environment would compile all it imports: seconds of a deploy.
Most of its files are byte-identical to files that already have bytecode: in the agent's own
environment (pip compiles at install) or in an older environment (written by its first serve).
A timestamp ``.pyc`` is valid for any source with the same bytes once its header names that
source's mtime and size, and Python sets ``co_filename`` to the file it loads from, so each
identical file gets that bytecode with its header rewritten; a source that is the same file
(both hard-linked from uv's cache) gets the same ``.pyc`` hard-linked, at no disk cost.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from pathlib import Path

__all__ = ["agent_site_packages", "seed_bytecode", "site_packages"]

_TAG = sys.implementation.cache_tag
_HEADER = 16  # magic, flags, source mtime, source size (PEP 552)


def site_packages(env: Path, python: str) -> Path:
    return env / "lib" / f"python{python}" / "site-packages"


def agent_site_packages() -> list[Path]:
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return [Path(p) for p in sorted(paths) if Path(p).is_dir()]


def seed_bytecode(target: Path, donors: list[Path]) -> int:
    """Give each source under ``target`` (a site-packages) the bytecode of the first donor that
    has the same file with valid bytecode; returns how many files were seeded."""
    donors = [d for d in donors if d.is_dir() and d != target]
    seeded = 0
    for root, dirs, files in os.walk(target):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(root, target)
        for name in files:
            if not name.endswith(".py"):
                continue
            cached = os.path.join(rel, "__pycache__", f"{name[:-3]}.{_TAG}.pyc")
            dest = target / cached
            if dest.exists():
                continue
            source = target / rel / name
            for donor in donors:
                if _seed_one(source, donor / rel / name, donor / cached, dest):
                    seeded += 1
                    break
    return seeded


def _seed_one(source: Path, donor_source: Path, donor_pyc: Path, dest: Path) -> bool:
    try:
        ours, theirs = source.stat(), donor_source.stat()
        if ours.st_size != theirs.st_size:
            return False
        with open(donor_pyc, "rb") as f:
            header = f.read(_HEADER)
            if header[:4] != importlib.util.MAGIC_NUMBER or header[4:8] != b"\0\0\0\0":
                return False  # another Python's, or a hash-based one: leave it to Python
            if header[8:16] != _stamp(theirs):
                return False  # stale: the donor's source changed since
            same_file = (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)
            if not same_file and source.read_bytes() != donor_source.read_bytes():
                return False
            dest.parent.mkdir(exist_ok=True)
            if header[8:16] == _stamp(ours):
                try:
                    os.link(donor_pyc, dest)
                    return True
                except OSError:
                    pass
            body = f.read()
        partial = dest.with_name(f".{dest.name}.{os.getpid()}")
        partial.write_bytes(header[:8] + _stamp(ours) + body)
        os.replace(partial, dest)  # a server importing meanwhile sees all of it or nothing
        return True
    except OSError:
        return False


def _stamp(st: os.stat_result) -> bytes:
    return (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
