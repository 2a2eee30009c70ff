"""Fixtures every test directory may use."""
from __future__ import annotations

import pytest

from bench.harness import start_router


@pytest.fixture
def router_factory():
    """Start routers (bench/harness.py) at will; each is stopped when the test ends."""
    started = []

    def start(*args, **kw):
        started.append(start_router(*args, **kw))
        return started[-1]

    yield start
    for rp in started:
        rp.stop()
