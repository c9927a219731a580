"""The one-line checks of config values (each names the bad value and what is allowed), beneath every component
that checks its own part of a config."""
from __future__ import annotations

from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from pexp.errors import ConfigError
from pexp.schema import allowed, requirement


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
    """A number (an integer when asked) within the bounds, phrased as the schemas' fields are
    (:func:`pexp.schema.requirement`): for the groups that check their values in code."""
    meta = {"kind": "integer" if integer else "number", "null": optional, "ge": None if low_open else low,
            "gt": low if low_open else None, "le": None if high_open else high, "lt": high if high_open else None}
    value = get_required(cfg, key)
    if not allowed(value, meta):
        raise ConfigError(f"{key}={value!r} is not allowed: {requirement(meta)}")
