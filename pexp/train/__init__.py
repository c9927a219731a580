"""Training: ``python -m pexp.train experiment=<name> [overrides]``."""
from pexp.train.loop import load_trained, train

__all__ = ["train", "load_trained"]
