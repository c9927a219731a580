"""``python -m pexp.runs`` (``make runs``): the table of the runs under the output folder, :mod:`pexp.runs_table`
(which builds on :mod:`pexp.runs`, so the package itself does not import it)."""
import sys

from pexp.runs_table import main

if __name__ == "__main__":
    sys.exit(main())
