"""``make bench [ARGS="--quick | --full-e2e | --runs-from DIR | ..."]``: see pexp/bench.py (``--help``)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pexp, whatever is installed

from pexp.bench import main  # noqa: E402

if __name__ == "__main__":
    main()
