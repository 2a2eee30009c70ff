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
