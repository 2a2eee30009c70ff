import sys
from pathlib import Path

# The e2e tests share tests/e2e/harness.py (importlib import mode: no packages).
sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture
def clean_sim(sim):
    """The module's simulator with every fault cleared and stats reset, before and after."""
    for rid in sim.ports:
        sim.reset(rid)
    sim.reset_stats()
    yield sim
    for rid in sim.ports:
        sim.reset(rid)
