import sys
from pathlib import Path

import pytest

# The wire tests share tests/router/wire_rig.py (importlib import mode: no packages).
sys.path.insert(0, str(Path(__file__).parent))

from wire_rig import Rig  # noqa: E402


@pytest.fixture
def rig_factory():
    made = []

    def make(**limits) -> Rig:
        r = Rig(**limits)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
