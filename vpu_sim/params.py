"""Parameter values shared by the command line, ``--fault`` options and scenario files.

Every converter takes what a user may have written, a string from the command line or a TOML
value, and returns the typed value or raises ValueError with a sentence that says what was
expected. ``check`` applies a schema of converters to a table, naming the table in its errors.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

Converter = Callable[[object], Any]


def size(value: object) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    match = re.fullmatch(r"(\d+)x(\d+)", value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"a size looks like 1920x1080, not {value!r}")
    return int(match.group(1)), int(match.group(2))


def _number(value: object) -> float:
    # bool is an int to Python, but `seconds = true` is a mistake, not 1 second.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number, not {value!r}") from None
    if math.isnan(number):
        raise ValueError("expected a number, not NaN")
    return number


def seconds(value: object) -> float:
    """A time or duration in seconds: a number >= 0."""
    number = _number(value)
    if number < 0:
        raise ValueError(f"expected seconds >= 0, not {value!r}")
    return number


def positive(value: object) -> float:
    number = _number(value)
    if not 0 < number < math.inf:
        raise ValueError(f"expected a number > 0, not {value!r}")
    return number


def count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit() or int(value) < 1:
        raise ValueError(f"expected a whole number >= 1, not {value!r}")
    return int(value)


def text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, not {value!r}")
    return value


def choice(options: tuple[str, ...]) -> Converter:
    def convert(value: object) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, not {value!r}")
        return str(value)
    return convert


def _items(value: object) -> list[object]:
    """A TOML list, or on the command line one string with the items joined by '+'."""
    items = value.split("+") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected a non-empty list (on the command line: items joined by '+'), not {value!r}")
    return items


def words(value: object) -> tuple[str, ...]:
    return tuple(text(item) for item in _items(value))


def sizes(value: object) -> tuple[tuple[int, int], ...]:
    return tuple(size(item) for item in _items(value))


def tables(value: object) -> list[dict[str, object]]:
    """A TOML array of tables (``[[app]]``)."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("expected an array of tables: write each entry under its own [[...]] header")
    return value


@dataclass(frozen=True)
class Field:
    convert: Converter
    required: bool = False
    default: Any = None


Schema = Mapping[str, Field]


def check(raw: Mapping[str, object], schema: Schema, where: str) -> dict[str, Any]:
    """The table ``raw`` converted by ``schema``: unknown keys, missing keys and bad values are
    ValueErrors naming ``where`` and the key (a typo must not be silently ignored)."""
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(schema)})")
    values: dict[str, Any] = {}
    for key, field in schema.items():
        if key not in raw:
            if field.required:
                raise ValueError(f"{where}: {key} is required")
            values[key] = field.default
            continue
        try:
            values[key] = field.convert(raw[key])
        except ValueError as exc:
            raise ValueError(f"{where}: {key}: {exc}") from None
    return values
