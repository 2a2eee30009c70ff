"""Which build is running: compiled (mypyc) or pure Python.

A compiled build installs, beside each extension module, the .py it was built
from and a manifest (_compiled.json) of those sources' sha256. Python imports an
extension before a .py of the same name, so an extension left in a source tree
after its .py changed would silently run old code; `check` refuses that.
"""
from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

MANIFEST = "_compiled.json"


class StaleBuildError(ImportError):
    """Compiled modules that were not built from the sources beside them."""


def extension_modules(package_dir: Path) -> dict[str, Path]:
    """Module name -> extension file, for every extension in the directory."""
    found: dict[str, Path] = {}
    for path in package_dir.iterdir():
        # The longest suffix first: "x.cpython-311-x86_64-linux-gnu.so" is module x.
        suffix = next((s for s in EXTENSION_SUFFIXES if path.name.endswith(s)), None)
        if suffix is not None:
            found[path.name[: -len(suffix)]] = path
    return found


def check(package_dir: Path) -> tuple[str, ...]:
    """The compiled modules of the package, after checking each one against
    its source; raises StaleBuildError if any was built from another source."""
    exts = extension_modules(package_dir)
    if not exts:
        return ()
    try:
        built = json.loads((package_dir / MANIFEST).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        built = {}
    stale = []
    for name, ext in sorted(exts.items()):
        source = package_dir / f"{name}.py"
        if name not in built:
            stale.append(f"{ext.name} (not in {MANIFEST}: left by another build)")
        elif not source.exists():
            stale.append(f"{ext.name} (its source {source.name} is gone)")
        elif hashlib.sha256(source.read_bytes()).hexdigest() != built[name]:
            stale.append(f"{ext.name} (built from another version of {source.name})")
    if stale:
        raise StaleBuildError(
            f"edge-router: stale compiled modules in {package_dir} would run old code: {'; '.join(stale)}. "
            f"Rebuild them (pip install . / python setup.py build_ext --inplace) or delete them "
            f"(git clean -fX {package_dir.name}/)."
        )
    return tuple(sorted(exts))


COMPILED: tuple[str, ...] = check(Path(__file__).resolve().parent)
BUILD = f"compiled (mypyc, {len(COMPILED)} modules)" if COMPILED else "pure Python"
