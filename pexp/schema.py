"""How a config group's options are declared: a dataclass per option (or one per group), registered in Hydra's
ConfigStore and extended by its YAML files (``defaults: [base_<name>, _self_]``), next to the code it configures.

Hydra then composes typed configs: a key no schema declares, an integer field given ``1.5`` or an Enum field given
a name it lacks stop the composition (:func:`schema_error_line` says it in one line). What OmegaConf cannot state
is declared in the field's metadata and checked by :func:`check_fields` over the composed config:
- the bounds of a number or integer (``number(0.0, ge=0)``, ``integer(4, ge=1)``); numbers are typed ``Any``
  because OmegaConf's float fields turn ``0`` into ``0.0``, which would change the values a run hash reads and
  the values an error line names;
- true/false flags (``flag(False)``, typed ``Any`` because OmegaConf's bool fields take ``yes`` and ``1``);
- lists of integers (``integers(...)``: bounds, length, distinct).
A key that only some configs set is declared with the default :data:`UNSET` (OmegaConf's ``???``): ``key in cfg``
is false and ``cfg.get(key, default)`` returns the default until a config sets it, and hashes leave it out
(:func:`pexp.runs.hashable`), so declaring an optional key moves no run hash.
"""
from __future__ import annotations

import dataclasses
import numbers
import typing
from enum import Enum
from typing import Any, Callable, Iterator

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from pexp.errors import ConfigError

UNSET: Any = MISSING  # an optional key: absent until a config sets it


@dataclasses.dataclass
class ScaleKeys:
    """The eval keys ``scale=smoke`` sets (conf/scale/smoke.yaml) whichever evaluator a run uses: declared by every
    evaluator's schema (which extends this), unset until a config sets them; an evaluator that neither subsets its
    points nor searches leaves them unread, and an evaluator that reads one declares it again with its checks."""

    n_train: Any = UNSET
    n_test: Any = UNSET
    resolution: Any = UNSET
    fmn_steps: Any = UNSET


SCHEMA_PREFIX = "base_"  # a schema's name in its group, beside the group's options (which never start so)


def store(node: type, name: str, group: str | None = None) -> None:
    """Register ``node`` as ``<group>/base_<name>`` in Hydra's ConfigStore (the YAML options name it in their
    defaults list)."""
    ConfigStore.instance().store(group=group, name=SCHEMA_PREFIX + name, node=node)


# The rules no schema can state (a value allowed only with another), by the group whose code owns them.
CROSS_CHECKS: dict[str, list[Callable[[DictConfig], None]]] = {}


def cross_check(group: str) -> Callable[[Callable[[DictConfig], None]], Callable[[DictConfig], None]]:
    """Register a rule the ``group``'s code owns, given the whole composed config (raises ConfigError)."""

    def register(rule: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
        CROSS_CHECKS.setdefault(group, []).append(rule)
        return rule

    return register


def plain_list(value: Any) -> Any:
    """A config value as a python list when it is a list node (what a rule checks and its error line shows), else as
    it is."""
    return list(value) if OmegaConf.is_list(value) else value


def has_schema(node: Any, schema: type) -> bool:
    """Whether a composed config node was built from ``schema`` (or a schema extending it): what a group's rule
    asks to apply only to the options of one schema."""
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    return isinstance(kind, type) and issubclass(kind, schema)


def check_groups(cfg: DictConfig, *groups: str) -> None:
    """The declared fields of ``groups`` (``""``: the root's own keys), then the rules their code registered."""
    check_fields(cfg, *groups)
    for group in groups:
        for rule in CROSS_CHECKS.get(group, ()):
            rule(cfg)


def choices(enum: type[Enum]) -> str:
    return ", ".join(member.name for member in enum)


def _field(default: Any, meta: dict) -> Any:
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def number(default: Any = UNSET, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, null: bool = False) -> Any:
    """A number field (int or float kept as written) within the given bounds; ``null``: None is allowed too."""
    return _field(default, {"kind": "number", "ge": ge, "gt": gt, "le": le, "lt": lt, "null": null})


def integer(default: Any = UNSET, *, ge: int | None = None, le: int | None = None, null: bool = False) -> Any:
    """An integer field (type it ``int`` or ``Optional[int]``: OmegaConf checks that) within the given bounds."""
    return _field(default, {"kind": "integer", "ge": ge, "le": le, "null": null})


def flag(default: Any = UNSET) -> Any:
    """A true/false field."""
    return _field(default, {"kind": "flag"})


def integers(default: Any = UNSET, *, ge: int, le: int | None = None, length: int | None = None,
             distinct: bool = False, null: bool = False) -> Any:
    """A non-empty list of integers within the bounds (of ``length`` items, distinct, when asked)."""
    return _field(default, {"kind": "integers", "ge": ge, "le": le, "length": length, "distinct": distinct,
                            "null": null})


def _bounds(meta: dict) -> str:
    parts = [f"{op} {meta[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
             if meta.get(key) is not None]
    return " and ".join(parts)


def requirement(meta: dict) -> str:
    """What a field allows, as the end of a one-line error (``must be an integer >= 1``)."""
    kind = meta["kind"]
    if kind == "flag":
        return "must be true or false"
    if kind == "integers":
        what = f"a list of {meta['length']} " if meta.get("length") else "a non-empty list of "
        what += f"{'distinct ' if meta.get('distinct') else ''}integers >= {meta['ge']}"
        return "must be " + what + (f" and <= {meta['le']}" if meta.get("le") is not None else "") + (
            " or null" if meta.get("null") else "")
    text = f"must be {'an integer' if kind == 'integer' else 'a number'} {_bounds(meta)}".rstrip()
    return text + (" or null" if meta.get("null") else "")


def _within(value: Any, meta: dict) -> bool:
    return all(bound is None or test(value, bound) for bound, test in (
        (meta.get("ge"), lambda v, b: v >= b), (meta.get("gt"), lambda v, b: v > b),
        (meta.get("le"), lambda v, b: v <= b), (meta.get("lt"), lambda v, b: v < b)))


def is_number(value: Any) -> bool:
    """An int or float (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def allowed(value: Any, meta: dict) -> bool:
    if value is None:
        return bool(meta.get("null"))
    kind = meta["kind"]
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "integers":
        items = list(value) if isinstance(value, (list, tuple, ListConfig)) else None
        return bool(items) and all(isinstance(i, int) and not isinstance(i, bool) and _within(i, meta)
                                   for i in items) and (not meta.get("length") or len(items) == meta["length"]) \
            and (not meta.get("distinct") or len(set(items)) == len(items))
    if not is_number(value) or (kind == "integer" and not float(value).is_integer()):
        return False
    return _within(value, meta)


def _shown(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _fields(node: DictConfig) -> dict[str, dataclasses.Field]:
    kind = OmegaConf.get_type(node)
    return {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}


def _typed_nodes(node: DictConfig, prefix: str) -> Iterator[tuple[str, DictConfig]]:
    yield prefix, node
    for key in node:
        if not OmegaConf.is_missing(node, key) and isinstance(node[key], DictConfig):
            yield from _typed_nodes(node[key], f"{prefix}{key}.")


def check_fields(cfg: DictConfig, *keys: str) -> None:
    """Check every declared field (bounds, flags, lists) of the typed nodes under ``keys`` of ``cfg`` (the root
    node's own fields when ``keys`` holds ``""``); the first field whose value is not allowed raises ConfigError."""
    for key in keys:
        start = cfg if key == "" else OmegaConf.select(cfg, key)
        if not isinstance(start, DictConfig):
            continue
        for prefix, node in _typed_nodes(start, f"{key}." if key else ""):
            if key == "" and prefix:
                break  # the root's own fields only
            for name, spec in _fields(node).items():
                meta = spec.metadata
                if "kind" not in meta or OmegaConf.is_missing(node, name):
                    continue
                value = node[name]
                if not allowed(value, meta):
                    raise ConfigError(f"{prefix}{name}={_shown(value)!r} is not allowed: {requirement(meta)}")


def schema_error_line(cause: OmegaConfBaseException) -> str | None:
    """One line for OmegaConf's error about a typed field (a value of another type, a name its Enum lacks), naming
    the value and what the field allows; None for any other error."""
    full_key = getattr(cause, "full_key", None)
    kind = getattr(cause, "object_type", None)
    if not full_key or not dataclasses.is_dataclass(kind):
        return None
    specs = {f.name: f for f in dataclasses.fields(kind)}
    name = str(cause.key)
    if not isinstance(cause, ValidationError) or name not in specs:
        return None
    spec, value = specs[name], _shown(cause.value)
    hint = typing.get_type_hints(kind)[name]
    args = typing.get_args(hint) or (hint,)
    enum = next((arg for arg in args if isinstance(arg, type) and issubclass(arg, Enum)), None)
    null = " or null" if type(None) in args else ""
    if enum is not None:
        return f"{full_key}={value!r} is not allowed: choose one of {choices(enum)}{null}"
    if "kind" in spec.metadata:
        return f"{full_key}={value!r} is not allowed: {requirement(spec.metadata)}"
    return f"{full_key}={value!r} is not allowed: must be {_type_name(args[0])}{null}"


def _type_name(kind: Any) -> str:
    return {int: "an integer", str: "a string", bool: "true or false", float: "a number"}.get(kind, str(kind))
