"""Checks of arguments and config fields, all in one wording: ``name must be ALLOWED; got VALUE``.

A :class:`Rule` is what one argument accepts, as a predicate and in words; the public functions,
the config fields (:data:`scoresde.config.FIELDS`) and the command line all check with rules from
here, so every refusal reads the same way::

    >>> check_int("num_steps", 0, minimum=1)
    Traceback (most recent call last):
    ValueError: num_steps must be an integer >= 1; got 0

Choices are always quoted (``one of 'linear', 'cosine'``), values are shown with ``repr``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "Rule",
    "refusal",
    "integer",
    "integers",
    "number",
    "positive",
    "boolean",
    "choice",
    "optional",
    "check_int",
    "check_positive",
    "check_number",
    "check_choice",
    "check_bool",
]

T = TypeVar("T")


def refusal(name: str, allowed: str, value: Any) -> str:
    """The one message form: ``name must be ALLOWED; got VALUE``."""
    return f"{name} must be {allowed}; got {value!r}"


@dataclass(frozen=True)
class Rule:
    """What one argument accepts: ``accepts(value)`` and the same in words (``allowed``)."""

    accepts: Callable[[Any], bool]
    allowed: str

    def check(self, name: str, value: T) -> T:
        """``value`` if the rule accepts it, else ``ValueError`` in the one message form."""
        if not self.accepts(value):
            raise ValueError(refusal(name, self.allowed, value))
        return value


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    """A finite real number (ints included, bools and NaN/inf excluded)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def integer(minimum: int | None = None, maximum: int | None = None, *, even: bool = False) -> Rule:
    """An integer (not a bool) in ``[minimum, maximum]``; with ``even``, an even one."""

    def accepts(v: Any) -> bool:
        return (
            _is_int(v)
            and (minimum is None or v >= minimum)
            and (maximum is None or v <= maximum)
            and (not even or v % 2 == 0)
        )

    kind = "an even integer" if even else "an integer"
    if minimum is not None and maximum is not None:
        words = f"{kind} in [{minimum}, {maximum}]"
    elif minimum is not None:
        words = f"{kind} >= {minimum}"
    elif maximum is not None:
        words = f"{kind} <= {maximum}"
    else:
        words = kind
    return Rule(accepts, words)


def integers(minimum: int, *, empty: bool = False) -> Rule:
    """A tuple or list of integers ``>= minimum``, non-empty unless ``empty``."""
    words = f"a {'' if empty else 'non-empty '}tuple of integers >= {minimum}"
    return Rule(
        lambda v: (
            isinstance(v, (tuple, list))
            and (empty or len(v) > 0)
            and all(_is_int(m) and m >= minimum for m in v)
        ),
        words,
    )


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Rule:
    """A finite real number between ``low`` and ``high`` (each end closed unless ``*_open``)."""

    def accepts(v: Any) -> bool:
        if not _is_real(v):
            return False
        above = low is None or (v > low if low_open else v >= low)
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    if low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        words = f"a number in {left}{low}, {high}{right}"
    elif low is not None:
        words = f"a finite number {'>' if low_open else '>='} {low}"
    elif high is not None:
        words = f"a finite number {'<' if high_open else '<='} {high}"
    else:
        words = "a finite number"
    return Rule(accepts, words)


def positive() -> Rule:
    """A finite real number > 0."""
    return number(0, low_open=True)


def boolean() -> Rule:
    """``True`` or ``False`` (not 0 or 1)."""
    return Rule(lambda v: isinstance(v, bool), "True or False")


def choice(names: Iterable[str]) -> Rule:
    """One of ``names``, which the message quotes: ``one of 'a', 'b'``."""
    names = tuple(names)
    words = "one of " + ", ".join(map(repr, names))
    return Rule(lambda v: isinstance(v, str) and v in names, words)


def optional(rule: Rule) -> Rule:
    """``None`` or what ``rule`` accepts."""
    return Rule(lambda v: v is None or rule.accepts(v), f"None or {rule.allowed}")


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``; else raise."""
    return int(integer(minimum, maximum).check(name, value))


def check_positive(name: str, value: Any) -> float:
    """``value`` as a ``float`` if it is a finite number > 0; else ``ValueError``."""
    return float(positive().check(name, value))


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a ``float`` if it lies between ``low`` and ``high``; else ``ValueError``."""
    rule = number(low, high, low_open=low_open, high_open=high_open)
    return float(rule.check(name, value))


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``; else ``ValueError`` quoting the choices."""
    return choice(allowed).check(name, value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; else ``ValueError``."""
    return boolean().check(name, value)
