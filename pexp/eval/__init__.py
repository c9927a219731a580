"""Evaluators: each reads a finished run and writes tidy CSV results beside it."""
