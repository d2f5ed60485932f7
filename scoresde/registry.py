"""Name -> constructor tables: predictors, correctors, networks and toy datasets are found by name.

    PREDICTORS = Registry("predictor")

    @PREDICTORS.register("my_predictor")
    class MyPredictor(Predictor): ...

    MODELS.build("mlp", dim=2, hidden=64)     # MLPScoreNet(dim=2, hidden=64)

A registry is a plain ``dict`` (look-ups, ``in``, iteration and ``del`` work as usual) of classes or
factory functions. Registering a name twice is an error rather than a silent replacement;
:meth:`Registry.lookup` and :meth:`Registry.build` turn an unknown name or keyword into a
``ValueError`` that lists the allowed ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from scoresde.validation import refusal

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable[..., Any])


class Registry(dict[str, F]):
    """Constructors (classes or factory functions) by name.

    Arguments:
        kind: what the registry holds, for error messages (``"predictor"``).
        entries: the first entries, ``name -> constructor``, each :meth:`add`-ed.
    """

    def __init__(self, kind: str, entries: Mapping[str, F] | None = None):
        super().__init__()
        self.kind = kind
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: F) -> F:
        """Register ``entry`` as ``name``, which must be new; returns ``entry``."""
        if name in self:
            raise ValueError(
                f"a {self.kind} named {name!r} is already registered "
                f"({getattr(self[name], '__name__', self[name])!r})"
            )
        self[name] = entry
        return entry

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: :meth:`add` the decorated class or function as ``name``."""
        return lambda entry: self.add(name, entry)

    def lookup(self, name: str) -> F:
        """The entry ``name``; a ``ValueError`` naming the registered ones if there is none."""
        if name not in self:
            raise ValueError(refusal(self.kind, "one of " + ", ".join(map(repr, self)), name))
        return self[name]

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """``entry(**kwargs)`` for the entry ``name``, refusing keywords it does not take."""
        entry = self.lookup(name)
        allowed = list(inspect.signature(entry).parameters)
        unknown = [key for key in kwargs if key not in allowed]
        if unknown:
            takes = f"takes {', '.join(map(repr, allowed))}" if allowed else "takes no arguments"
            got = ", ".join(map(repr, unknown))
            raise ValueError(f"{self.kind} {name!r} {takes}; got unknown {got}")
        return entry(**kwargs)
