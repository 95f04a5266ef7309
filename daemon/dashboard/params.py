"""The dashboard API's inputs: query parameters and JSON bodies, read with bounds, each problem an
InvalidArgument naming the parameter or the body's field (HTTP 400). The servicers check the values
again, with the gRPC API's bounds and messages; these checks are about HTTP itself (a body too large,
not JSON, a field of the wrong type, a number that does not parse)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from cronraft import errors

__all__ = ["MAX_BODY_BYTES", "MAX_PAGE_SIZE", "Body", "Query", "read_body"]

MAX_BODY_BYTES = 256 * 1024  # a write's JSON body (ids, a note, a reason: a few KiB at most)
MAX_PAGE_SIZE = 200  # rows of one dashboard page (the gRPC API allows 1,000)
DEFAULT_PAGE_SIZE = 50
MAX_QUERY_VALUE = 1024  # characters of one query parameter
_INT64 = (-(2**63), 2**63 - 1)


class Query:
    """The query string of one request."""

    def __init__(self, query: Mapping[str, str], getall: Any = None) -> None:
        self._query = query
        self._getall = getall

    @classmethod
    def of(cls, request: web.Request) -> Query:
        return cls(request.query, request.query.getall)

    def text(self, name: str, default: str = "") -> str:
        value = self._query.get(name, default)
        if len(value) > MAX_QUERY_VALUE:
            raise errors.InvalidArgument(name, f"longer than {MAX_QUERY_VALUE} characters")
        return value

    def all(self, name: str) -> list[str]:
        values: list[str] = list(self._getall(name, [])) if self._getall is not None else []
        for v in values:
            if len(v) > MAX_QUERY_VALUE:
                raise errors.InvalidArgument(name, f"longer than {MAX_QUERY_VALUE} characters")
        return values

    def integer(self, name: str, default: int = 0, *, low: int = 0, high: int = _INT64[1]) -> int:
        raw = self.text(name)
        if raw == "":
            return default
        try:
            value = int(raw, 10)
        except ValueError:
            raise errors.InvalidArgument(name, f"not an integer: {raw[:40]!r}") from None
        if not low <= value <= high:
            raise errors.InvalidArgument(name, f"must be between {low} and {high}")
        return value

    def flag(self, name: str) -> bool:
        raw = self.text(name).lower()
        if raw in ("", "0", "false", "no"):
            return False
        if raw in ("1", "true", "yes"):
            return True
        raise errors.InvalidArgument(name, f"not a boolean: {raw[:40]!r} (use true or false)")

    def page_size(self) -> int:
        return self.integer("page_size", DEFAULT_PAGE_SIZE, low=1, high=MAX_PAGE_SIZE)

    def pairs(self, name: str) -> dict[str, str]:
        """Repeated `name=key=value` parameters (tags) as a dict."""
        out: dict[str, str] = {}
        for i, item in enumerate(self.all(name)):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise errors.InvalidArgument(f"{name}[{i}]", f"expected key=value, got {item[:40]!r}")
            out[key] = value
        return out


class Body:
    """A JSON object body; every getter names the field it refuses."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def text(self, name: str, default: str = "") -> str:
        value = self._data.get(name, default)
        if value is None:
            return default
        if not isinstance(value, str):
            raise errors.InvalidArgument(name, f"must be a string, not {_kind(value)}")
        return value

    def flag(self, name: str) -> bool:
        value = self._data.get(name, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise errors.InvalidArgument(name, f"must be true or false, not {_kind(value)}")
        return value

    def integer(self, name: str, default: int = 0) -> int:
        value = self._data.get(name, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.InvalidArgument(name, f"must be an integer, not {_kind(value)}")
        if not _INT64[0] <= value <= _INT64[1]:
            raise errors.InvalidArgument(name, "out of the 64-bit range")
        return value

    def texts(self, name: str, *, most: int) -> list[str]:
        value = self._data.get(name, [])
        if value is None:
            return []
        if not isinstance(value, list):
            raise errors.InvalidArgument(name, f"must be a list of strings, not {_kind(value)}")
        if len(value) > most:
            raise errors.InvalidArgument(name, f"at most {most} items")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise errors.InvalidArgument(f"{name}[{i}]", f"must be a string, not {_kind(item)}")
        return list(value)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


async def read_body(request: web.Request) -> Body:
    """The request's JSON object body (an empty body is an empty object), at most MAX_BODY_BYTES.

    Only `application/json` is accepted: an HTML form from another site cannot send that type without
    a CORS preflight, which this API never answers (docs/dashboard.md, "Why no CSRF token")."""
    ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.InvalidArgument("body", f"larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise errors.InvalidArgument("body", f"larger than {MAX_BODY_BYTES} bytes")
    if ctype != "application/json":
        raise errors.InvalidArgument("Content-Type", "send the body as application/json")
    if not raw.strip():
        return Body({})
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise errors.InvalidArgument("body", f"not JSON{where}") from None
    if not isinstance(data, dict):
        raise errors.InvalidArgument("body", f"must be a JSON object, not {_kind(data)}")
    return Body(data)
