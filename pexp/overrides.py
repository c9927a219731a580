"""A command line's overrides, read by Hydra's own override grammar: each one a key (a config path or a config
group), a kind (``key=``, ``+key=``, ``++key=``, ``~key``) and a value; and the command lines pexp starts from
them (Hydra multiruns, one process per figure)."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, Sequence, overload

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException


class Overrides(Sequence[Override]):
    """Overrides in command-line order (of several for one key, the last wins, as in Hydra). Built from strings (an
    unreadable one raises Hydra's ``OverrideParseException``), parsed overrides, or both."""

    def __init__(self, items: Iterable[str | Override] = ()) -> None:
        items = list(items)
        text = [item for item in items if isinstance(item, str)]
        parsed = iter(OverridesParser.create().parse_overrides(text) if text else [])
        self._items = tuple(next(parsed) if isinstance(item, str) else item for item in items)

    @classmethod
    def readable(cls, arguments: Iterable[str]) -> Overrides:
        """The overrides of an entry point's whole command line: its flags (``-m``, ``--cfg job`` ...) and what
        Hydra's grammar cannot read are left out (Hydra reports them)."""
        def read(argument: str) -> list[Override]:
            try:
                return OverridesParser.create().parse_overrides([argument])
            except OverrideParseException:
                return []

        return cls(item for argument in arguments if not argument.startswith("-") for item in read(argument))

    @overload
    def __getitem__(self, index: int) -> Override: ...

    @overload
    def __getitem__(self, index: slice) -> Overrides: ...

    def __getitem__(self, index):
        return Overrides(self._items[index]) if isinstance(index, slice) else self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Override]:
        return iter(self._items)

    def __add__(self, other: Iterable[str | Override]) -> Overrides:
        return Overrides([*self._items, *other])

    def __repr__(self) -> str:
        return f"Overrides({self.strings()!r})"

    def strings(self) -> list[str]:
        """Each override as it was typed (what Hydra's compose and a command line take)."""
        return [str(item.input_line) for item in self._items]

    def last(self, key: str) -> Override | None:
        """The override that decides ``key`` (a config path, or a group: ``eval``), None when none names it."""
        return next((item for item in reversed(self._items) if item.key_or_group == key), None)

    def value(self, key: str, default: object = None) -> object:
        """The value of ``key``'s last override (``[1, 2]``, quotes removed; a sweep as Hydra's sweep object), else
        ``default``."""
        item = self.last(key)
        return default if item is None or item.is_delete() else item.value()

    def text(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key``'s last override as typed (``[1,2]``, ``outputs/smoke``), else ``default``."""
        item = self.last(key)
        return default if item is None or item.is_delete() else item.get_value_string()

    def under(self, top: str) -> Overrides:
        """The overrides of keys below ``top`` (``eval``: ``eval.steps``, ``+eval.grid``)."""
        return Overrides(item for item in self._items if _below(item, (top,)))

    def without(self, *keys: str, under: Sequence[str] = ()) -> Overrides:
        """These overrides but those of ``keys`` and of any key below one of ``under`` (``eval``: ``eval.steps``;
        ``hydra``: also the ``hydra/launcher`` group)."""
        return Overrides(item for item in self._items if item.key_or_group not in keys and not _below(item, under))


def _below(item: Override, tops: Sequence[str]) -> bool:
    return any(item.key_or_group.startswith((f"{top}.", f"{top}/")) for top in tops)


def python_command(module: str, *overrides: Iterable[str | Override], multirun: bool = False) -> list[str]:
    """``python -m <module> [-m] <overrides...>``: a pexp entry point's command line, each override as typed
    (strings are read first, so an unreadable one fails here, before anything starts)."""
    return [sys.executable, "-m", module, *(["-m"] if multirun else []),
            *Overrides(item for group in overrides for item in group).strings()]
