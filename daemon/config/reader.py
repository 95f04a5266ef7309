"""`_Table`: one TOML table being read, whose errors name the file and the dotted key; and the small
helpers every table parser shares (`_field_names`, `_path`, `_describe`, `_unit`)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar, cast

from cronraft.errors import ConfigError

_T = TypeVar("_T")


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


class _Table:
    """One TOML table being read, with its dotted path; rejects unknown keys when it is opened."""

    def __init__(self, data: Any, path: str, source: str, allowed: Sequence[str]) -> None:
        self.path = path
        self.source = source
        if not isinstance(data, Mapping):
            raise self.error("", f"expected a table ([{path}]), got {_describe(data)}")
        self.data: Mapping[str, Any] = data
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {self.key(close[0])}? " if close else ""
                raise self.error(key, f"unknown key ({hint}the keys allowed here are: {', '.join(allowed)})")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path and name else self.path or name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {problem}")

    def table(self, name: str, allowed: Sequence[str]) -> _Table:
        return _Table(self.data.get(name, {}), self.key(name), self.source, allowed)

    def has(self, name: str) -> bool:
        return name in self.data

    def string(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "missing; set it")
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_describe(value)}")
        if not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def integer(
        self, name: str, default: int, minimum: int, maximum: int | None = None, why: str = ""
    ) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            unit = _unit(name)
            raise self.error(name, f"expected an integer{unit}, got {_describe(value)}")
        reason = f" ({why})" if why else ""
        if value < minimum:
            raise self.error(name, f"{value} is too small: set it to at least {minimum}{reason}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"{value} is too large: set it to at most {maximum}{reason}")
        return value

    def choice(self, name: str, choices: Sequence[_T], default: _T) -> _T:
        value = self.data.get(name, default)
        if value not in choices:
            allowed = " | ".join(f'"{c}"' for c in choices)
            raise self.error(name, f"{_describe(value)} is not allowed; use one of {allowed}")
        return cast(_T, value)


def _unit(name: str) -> str:
    for suffix, unit in (("_ms", "milliseconds"), ("_s", "seconds"), ("_bytes", "bytes")):
        if name.endswith(suffix):
            return f" ({unit})"
    return ""


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kind = next((k for t, k in kinds.items() if isinstance(value, t)), f"a {type(value).__name__}")
    return f"{value!r} ({kind})"


def _path(t: _Table, name: str) -> Path | None:
    if not t.has(name):
        return None
    raw = Path(t.string(name)).expanduser()
    return raw if raw.is_absolute() else Path.cwd() / raw
