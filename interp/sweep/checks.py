"""Checking a sweep configuration key by key: each checker names the key and says what it expects.
"""

from __future__ import annotations

from ..common.errors import InterpError


class SweepConfigError(InterpError):
    """A sweep configuration that cannot be run as written."""


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def is_kind(value, kind) -> bool:
    if kind is int:  # TOML booleans are ints to Python; a seed of `true` is a mistake
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def bad_value(where: str, expected: str, value) -> SweepConfigError:
    return SweepConfigError(f"sweep config: {where} must be {expected}, not {value!r} "
                            f"({_type_name(value)})")


def optional_key(table: dict, key: str, kind, where: str, expected: str, default=None):
    if key not in table:
        return default
    value = table[key]
    if not is_kind(value, kind):
        raise bad_value(where, expected, value)
    return float(value) if kind is float else value


def sub_table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise bad_value(where, f"a table ([{where}])", value)
    return value


def no_unknown_keys(table: dict, allowed: set, where: str, hint: str = "") -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SweepConfigError(f"sweep config: unknown key(s) {unknown} in {where}; allowed: "
                               f"{', '.join(sorted(allowed))}{hint}")


def grid_axis(table: dict, key: str, kind, where: str, expected: str, default=None) -> list:
    """A grid axis: a non-empty list of values (a single value is a list of one)."""
    if key not in table:
        if default is None:
            raise SweepConfigError(f"sweep config: {where} is missing; it must be a list of "
                                   f"{expected}")
        return list(default)
    values = table[key]
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise SweepConfigError(f"sweep config: {where} is empty, so the grid would have no "
                               f"cells; give at least one of {expected}")
    for v in values:
        if not is_kind(v, kind):
            raise bad_value(f"every entry of {where}", expected, v)
    return [float(v) if kind is float else v for v in values]


def nested_grid_axis(table: dict, key: str, kind, where: str, example: str, default=None) -> list:
    """An axis whose values are lists themselves (kinds, layers). A flat list is refused: it
    could mean one combination or one cell per entry."""
    if key not in table:
        if default is None:
            raise SweepConfigError(f"sweep config: {where} is missing; e.g. {key} = {example}")
        return [list(d) for d in default]
    values = table[key]
    if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
        raise SweepConfigError(f"sweep config: {where} must be a list of lists (one per cell), "
                               f"e.g. {key} = {example}; got {values!r}")
    if not values or not all(values):
        raise SweepConfigError(f"sweep config: {where} has an empty list, so the grid would "
                               f"have no cells; e.g. {key} = {example}")
    for combo in values:
        for v in combo:
            if not is_kind(v, kind):
                raise bad_value(f"every entry of {where}", _type_name(kind()), v)
    return values


def one_of(value, allowed, where: str):
    if value not in allowed:
        raise SweepConfigError(f"sweep config: {where} is {value!r}; use one of "
                               f"{', '.join(map(str, allowed))}")
    return value


def known_prompt_set(name: str, prompts: dict, where: str) -> str:
    if name not in prompts:
        defined = ", ".join(prompts) or "none"
        raise SweepConfigError(f"sweep config: {where} names the prompt set {name!r}, which is "
                               f"not defined: add a [prompts.{name}] table (defined: {defined})")
    return name
