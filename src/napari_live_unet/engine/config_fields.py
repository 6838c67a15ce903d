"""Checked, frozen configuration values and their plain-data form.

The configuration dataclasses (:mod:`.config`, :class:`~.image_adapter.InputSpec`) are
frozen and check every field when they are made, whether by a caller or from a model file
or run record. :func:`check_fields` applies one rule per field and stores the normalised
value (JSON lists become tuples, integers given for a float field become floats);
:class:`ConfigValue` derives ``to_dict`` and ``from_dict`` from the fields, so the keys a
file holds are the field names and nothing else.
"""

from __future__ import annotations

import functools
import math
import numbers
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

Rule = Callable[[str, Any], Any]
"""Checks the value of the named field: returns it normalised or raises ValueError."""

_C = TypeVar("_C", bound="ConfigValue")


class ConfigValue:
    """Mixin for frozen configuration dataclasses: plain-data form derived from the fields.

    ``to_dict`` gives JSON-ready data: tuples become lists, nested configurations dicts.
    ``from_dict`` refuses unknown keys, turns lists back into tuples and nested dicts
    into their configuration; absent keys take the field's default, so files written
    before a field existed still load.
    """

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready data (field name -> value)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # pyright: ignore[reportArgumentType]

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        """Rebuild from :meth:`to_dict` output (or an older file's).

        Raises
        ------
        ValueError
            Unknown keys, or a value its field refuses; the message names the field.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__} must be a mapping of fields, got {data!r}")
        known = {f.name for f in fields(cls)}  # pyright: ignore[reportArgumentType]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        nested = _nested_configs(cls)
        values = {
            key: nested[key].from_dict(value)
            if key in nested and isinstance(value, Mapping)
            else _tuples(value)
            for key, value in data.items()
        }
        return cls(**values)


def check_fields(config: Any, rules: Mapping[str, Rule]) -> None:
    """Check every field of the frozen dataclass ``config`` and store the normalised values.

    ``rules`` must name every field (so none goes unchecked); they run in their order, so
    a rule may read fields checked before it.
    """
    names = [f.name for f in fields(config)]
    if set(rules) != set(names):
        raise TypeError(
            f"{type(config).__name__}: rules for {sorted(rules)}, fields {sorted(names)}"
        )
    for name, rule in rules.items():
        # frozen: the dataclass's own __setattr__ refuses, as it should for everyone else
        object.__setattr__(config, name, rule(name, getattr(config, name)))


def real(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Rule:
    """A finite number within the bounds (stored as a float); None too if ``optional``."""
    allowed = "a number" + _bounds(low, high, low_open, high_open)

    def rule(name: str, value: Any) -> float | None:
        if value is None and optional:
            return None
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ValueError(_refusal(name, allowed, value, optional))
        number = float(value)
        if not (
            math.isfinite(number)
            and (low is None or (number > low if low_open else number >= low))
            and (high is None or (number < high if high_open else number <= high))
        ):
            raise ValueError(_refusal(name, allowed, value, optional))
        return number

    return rule


def integer(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Rule:
    """An integer within the bounds (a bool is not one); None too if ``optional``."""
    allowed = "an integer" + _bounds(low, high, False, False)

    def rule(name: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ValueError(_refusal(name, allowed, value, optional))
        number = int(value)
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(_refusal(name, allowed, value, optional))
        return number

    return rule


def flag(name: str, value: Any) -> bool:
    """A bool."""
    if not isinstance(value, bool):
        raise ValueError(_refusal(name, "true or false", value, False))
    return value


def choice(options: tuple[str, ...]) -> Rule:
    """One of ``options``."""

    def rule(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"{name} must be one of {options}, got {value!r}")
        return value

    return rule


def number_pair(low: float, *, low_open: bool = False, optional: bool = False) -> Rule:
    """Two numbers above ``low``, the first no larger than the second (a range)."""
    allowed = "two numbers" + _bounds(low, None, low_open, False) + ", the smaller first"
    number = real(low, low_open=low_open)

    def rule(name: str, value: Any) -> tuple[float, float] | None:
        if value is None:
            if optional:
                return None
            raise ValueError(_refusal(name, allowed, value, optional))
        try:
            pair = tuple(number(name, v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(_refusal(name, allowed, value, optional)) from None
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ValueError(_refusal(name, allowed, value, optional))
        return pair  # pyright: ignore[reportReturnType]  # length checked just above

    return rule


def instance_of(cls: type) -> Rule:
    """An instance of ``cls`` (a nested configuration)."""

    def rule(name: str, value: Any) -> Any:
        if not isinstance(value, cls):
            raise ValueError(f"{name} must be a {cls.__name__}, got {value!r}")
        return value

    return rule


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo, hi = _shown(low), _shown(high)
    if low is not None and high is not None:
        if not (low_open or high_open):
            return f" from {lo} to {hi}"
        return f" in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
    if low is not None:
        return f" greater than {lo}" if low_open else f" of at least {lo}"
    if high is not None:
        return f" below {hi}" if high_open else f" of at most {hi}"
    return ""


def _shown(bound: float | None) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _refusal(name: str, allowed: str, value: Any, optional: bool) -> str:
    return f"{name} must be {'None or ' if optional else ''}{allowed}, got {value!r}"


def _plain(value: Any) -> Any:
    if isinstance(value, ConfigValue):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@functools.cache
def _nested_configs(cls: type) -> dict[str, type[ConfigValue]]:
    """Fields of ``cls`` that hold a configuration of their own."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in fields(cls)
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], ConfigValue)
    }
