import sys
from pathlib import Path

# The e2e tests share tests/e2e/harness.py (importlib import mode: no packages).
sys.path.insert(0, str(Path(__file__).parent))
