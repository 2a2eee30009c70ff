"""Which build runs, and the refusal of compiled modules built from other sources."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import router
from router import buildinfo
from router.buildinfo import MANIFEST, StaleBuildError, check

SUFFIX = EXTENSION_SUFFIXES[0]


def _package(tmp_path: Path, source: bytes, built_from: bytes | None) -> Path:
    """A package directory with exchange.py, an 'extension' beside it, and a
    manifest saying which source the extension was built from."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "exchange.py").write_bytes(source)
    (pkg / f"exchange{SUFFIX}").write_bytes(b"\x7fELF not really")
    if built_from is not None:
        digest = hashlib.sha256(built_from).hexdigest()
        (pkg / MANIFEST).write_text(json.dumps({"modules": {"exchange": digest}}))
    return pkg


def test_a_directory_without_extensions_is_pure(tmp_path):
    (tmp_path / "exchange.py").write_text("x = 1\n")
    assert check(tmp_path) == ()


def test_extensions_built_from_the_sources_beside_them_are_accepted(tmp_path):
    pkg = _package(tmp_path, b"x = 1\n", built_from=b"x = 1\n")
    assert check(pkg) == ("exchange",)


def test_an_extension_built_from_an_older_source_is_refused(tmp_path):
    pkg = _package(tmp_path, b"x = 2\n", built_from=b"x = 1\n")
    with pytest.raises(StaleBuildError, match=r"exchange.*built from another version of exchange\.py"):
        check(pkg)


def test_an_extension_without_a_manifest_is_refused(tmp_path):
    pkg = _package(tmp_path, b"x = 1\n", built_from=None)
    with pytest.raises(StaleBuildError, match=r"not in _compiled\.json"):
        check(pkg)


def test_the_refusal_says_how_to_fix_it(tmp_path):
    pkg = _package(tmp_path, b"x = 2\n", built_from=b"x = 1\n")
    with pytest.raises(StaleBuildError) as err:
        check(pkg)
    assert "pip install ." in str(err.value) and "git clean -fX" in str(err.value)


def test_the_build_named_is_the_build_loaded():
    """BUILD says compiled exactly when the data plane modules are extensions."""
    import router.http1 as http1

    loaded_compiled = not http1.__file__.endswith(".py")
    assert loaded_compiled == bool(router.COMPILED)
    assert router.BUILD.startswith("compiled") == loaded_compiled
    assert ("http1" in router.COMPILED) == loaded_compiled
    assert buildinfo.BUILD == router.BUILD


def test_version_names_the_build():
    out = subprocess.run([sys.executable, "-m", "router", "--version"], capture_output=True, text=True,
                         timeout=60, cwd=Path(router.__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("edge-router ") and router.BUILD in out.stdout
