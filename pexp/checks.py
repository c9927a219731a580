"""The one-line checks of config values (each names the bad value and what is allowed), beneath every component
that checks its own part of a config."""
from __future__ import annotations

import numbers
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from pexp.errors import ConfigError


def get_required(cfg: DictConfig, key: str) -> Any:
    """The value at the dotted ``key`` (None when absent; an error when it is a missing value)."""
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def check_choice(cfg: DictConfig, key: str, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    value = get_required(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(map(str, allowed))}")


def check_bool(cfg: DictConfig, key: str) -> None:
    value = get_required(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not allowed: must be true or false")


def check_number(cfg: DictConfig, key: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 optional: bool = False) -> None:
    value = get_required(cfg, key)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high}")
        extra = " or null" if optional else ""
        raise ConfigError(f"{key}={value!r} is not allowed: must be {kind} {' and '.join(bounds)}{extra}".rstrip())
