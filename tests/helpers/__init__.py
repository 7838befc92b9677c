"""What the tests share: paths of the repository, and rigs and fakes (imported as ``helpers.X``)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "tests" / "golden"
