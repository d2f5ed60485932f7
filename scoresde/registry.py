"""Name -> class tables that a class decorator fills: how samplers find predictors and correctors.

    PREDICTORS = Registry("predictor")

    @PREDICTORS.register("my_predictor")
    class MyPredictor(Predictor): ...

A registry is a plain ``dict`` (look-ups, ``in``, iteration and ``del`` work as usual); registering
a name twice is an error rather than a silent replacement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["Registry"]

C = TypeVar("C", bound=type)


class Registry(dict[str, C]):
    """Classes by name.

    Arguments:
        kind: what the registry holds, for error messages (``"predictor"``).
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: add the class to this registry as ``name``."""

        def register(cls: C) -> C:
            if name in self:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self[name] = cls
            return cls

        return register
