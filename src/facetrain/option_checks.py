"""Types and ranges of options: one mechanism for the training config (its flags and `--config` files
alike) and for every verb's flags, so a bad value is one `ConfigError` line naming the option, what it
must be and the value given, before anything is built or written.

- `Range(ok, text, why)`: the meaningful values of a number; `Range.check(flag, value)`.
- `check_type(flag, value, hint)`: a value read from a file (JSON/YAML) against the field's annotation
  (argparse's `type=` already does this for flags); numbers must be finite.
- `ranged(action, rule)` attaches a Range to an argparse option; `check_parsed(parser, args)` (called by
  the CLI for every verb after parsing) checks them all.
"""
from __future__ import annotations

import argparse
import math
import reprlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from facetrain.errors import ConfigError


def fail(flag: str, rule: str, why: str, value: object) -> None:
    raise ConfigError(f"--{flag} must be {rule} ({why}), got {_shown(value)}")


_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxstring = 2, 4, 4, 4, 40


def _shown(value: object) -> str:
    """The value as the message quotes it, bounded: a YAML file's aliases can nest one list in itself
    exponentially often, and a full repr would expand it."""
    return _SHORT.repr(value)


@dataclass(frozen=True)
class Range:
    """`ok(value)` on a finite number; `text` says the range as the message writes it ("in (0, 1]")."""
    ok: Callable[[float], bool]
    text: str
    why: str

    def check(self, flag: str, value: float) -> None:
        finite = isinstance(value, int) or math.isfinite(value)
        if not finite or not self.ok(value):
            fail(flag, self.text if isinstance(value, int) and not isinstance(value, bool) else f"finite and {self.text}",
                 self.why, value)


def at_least(minimum: int, why: str) -> Range:
    return Range(lambda v: v >= minimum, f">= {minimum}", why)


def between(low: int, high: int, why: str) -> Range:
    return Range(lambda v: low <= v <= high, f"in [{low}, {high}]", why)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


# annotation -> (test, what the message says a value must be)
_SIMPLE: dict[Any, tuple[Callable[[object], bool], str]] = {
    int: (_is_int, "a whole number"),
    float: (_is_number, "a finite number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "a string"),
    type(None): (lambda v: v is None, "null"),
}


def _matches(value: object, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    return _SIMPLE[hint][0](value)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('a ')}s"
    return _SIMPLE[hint][1]


def check_type(flag: str, value: object, hint: Any) -> None:
    """ConfigError unless `value` has the annotated type (bool is not a number, 16.0 not a whole number,
    NaN and infinities are no numbers at all)."""
    if not _matches(value, hint):
        raise ConfigError(f"--{flag} must be {_describe(hint)}, got {_shown(value)}")


def ranged(action: argparse.Action, rule: Range) -> argparse.Action:
    """Attach `rule` to a parser option; `check_parsed` applies it."""
    action.range = rule  # type: ignore[attr-defined]
    return action


def check_parsed(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """ConfigError for the first parsed option outside its Range (options left at None are not given)."""
    for action in parser._actions:
        rule = getattr(action, "range", None)
        value = getattr(args, action.dest, None)
        if rule is not None and value is not None:
            rule.check(action.option_strings[0].lstrip("-"), value)
