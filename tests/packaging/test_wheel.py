"""The wheel installs the product only: router (with its simulator), policies, geodata;
never bench/ nor tests/."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_wheel_holds_the_product_only(tmp_path):
    # Build from a copy, so that the checkout gets no build/ or egg-info droppings.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    out = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(src)], capture_output=True, text=True, timeout=280,
                       # the pure build: the file list is the same, without minutes of mypyc
                       env={**os.environ, "EDGE_ROUTER_NO_EXTENSIONS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = out.glob("edge_router-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"router", "policies", "geodata"}, sorted(top)
    assert not [n for n in names if n.startswith(("bench/", "tests/"))]
    for needed in ("router/cli.py", "router/simulator/__init__.py", "router/simulator/__main__.py",
                   "router/simulator/streams.py", "policies/__init__.py", "geodata/demo.py"):
        assert needed in names, needed
    (info,) = dist_info
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "edge-router = router.cli:main" in entry_points
    assert f"{info}/licenses/LICENSE" in names or f"{info}/LICENSE" in names, "the LICENSE file ships"


@pytest.mark.timeout(300)
def test_an_editable_build_never_compiles(tmp_path):
    """The README's test command installs editable; compiled modules in the tree
    would shadow the .py files under test (the round-2 CI ran the compiled build
    by mistake: egg_info finalizes build_ext before setuptools marks the build
    editable). mypyc and a compiler are here, so a wrong setup.py would compile."""
    pytest.importorskip("mypyc.build")
    assert shutil.which("gcc") or shutil.which("cc"), "a C compiler"
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "*.so"))
    out = tmp_path / "wheels"
    out.mkdir()
    # PEP 660's hook, as pip -e calls it, without pip's isolated build environment.
    r = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                        "print(build_meta.build_editable(sys.argv[1]))", str(out)],
                       cwd=src, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(out.glob("edge_router-*.whl")), r.stdout
    built = sorted(str(p.relative_to(src)) for p in src.rglob("*.so")) + sorted(
        str(p.relative_to(src)) for p in src.rglob("_compiled.json"))
    assert built == [], built
