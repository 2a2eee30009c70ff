"""Docs and deploy files cite only files that are in the repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "ARCHITECTURE.md", "bench/README.md", "deploy/README.md", "Dockerfile",
        *(str(p.relative_to(REPO)) for p in sorted((REPO / "deploy").rglob("*.y*ml")))]
# A repo path: starts with one of the top directories (or a known outside one, to catch it).
PATH = re.compile(r"(?<![\w./:-])((?:\.ci|deploy|router|bench|tests|geodata|policies|shared|seed)/[\w./{}-]*\w)")


GENERATED = {line.strip() for line in (REPO / ".gitignore").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "*" not in line}


@pytest.mark.parametrize("doc", DOCS)
def test_cited_paths_exist(doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    missing = []
    for path in PATH.findall(text):
        if "{" in path or "*" in path or path in GENERATED:
            continue  # a pattern, or a file the build writes (listed in .gitignore)
        if not (REPO / path).exists():
            missing.append(path)
    # The design notes live outside the repository: never cite them.
    missing += re.findall(r"\b(?:SPEC|ARCHITECTURE)\.md\b", text)
    assert not missing, f"{doc} cites {missing}"
