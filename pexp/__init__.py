"""pexp: reproduce the figures of four papers on why neural networks lack robustness."""
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
