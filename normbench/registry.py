"""One small registry used for models, strategies, datasets and suites.

Register by decorator (keyed on the function name unless a name is given),
look up by exact name, list with glob patterns. An unknown name fails loudly
and lists the valid names.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
from collections.abc import Iterable
from typing import Any

from .errors import ConfigError, UnknownNameError


def as_floats(func, params: dict) -> dict:
    """``params`` with each integer given for a parameter of ``func`` annotated ``float`` made a float, so that
    ``{c = 2}`` and ``{c = 2.0}`` are one setting (one run id)."""
    signature = inspect.signature(func).parameters
    return {k: float(v) if k in signature and str(signature[k].annotation) == "float" and isinstance(v, int)
            and not isinstance(v, bool) else v for k, v in params.items()}


def check_arguments(what: str, func, params: dict, positive: bool = False) -> None:
    """Each value in ``params`` has the type its parameter of ``func`` is annotated with (float: a finite
    number; int: an integer; bool; str; tuple/list: a list of integers), and with ``positive`` each number (or list
    item) is > 0. Checked before anything trains; a bad value names ``what``, the parameter and the type."""
    signature = inspect.signature(func).parameters

    def number(v, integer: bool) -> bool:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)
        return ok and not isinstance(v, bool) and (not positive or v > 0)

    for key, value in params.items():
        if key not in signature:
            continue
        annotation = str(signature[key].annotation)
        expected = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                    "tuple": "a list", "list": "a list"}.get(annotation)
        ok = {"int": lambda v: number(v, True), "float": lambda v: number(v, False),
              "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str),
              "tuple": lambda v: isinstance(v, (list, tuple)) and all(number(x, True) for x in v),
              "list": lambda v: isinstance(v, (list, tuple)) and all(number(x, True) for x in v)}.get(annotation)
        if ok is not None and not ok(value):
            scope = " > 0" if positive and annotation in ("int", "float", "tuple", "list") else ""
            items = " of integers" if annotation in ("tuple", "list") else ""
            raise ConfigError(f"{what}: {key} must be {expected}{items}{scope}, got {value!r}")


class Registry:
    """A named mapping of callables (or objects) with glob listing."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, obj: Any = None, *, name: str | None = None) -> Any:
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator."""

        def add(item: Any) -> Any:
            key = name or item.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> Any:
        """The item registered under ``name``; UnknownNameError lists the valid names."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a glob pattern (``mlp*``)."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def expand(self, patterns: str | Iterable[str]) -> list[str]:
        """Names for a comma list or iterable of exact names and glob patterns, in order, once each.

        A pattern that matches nothing is an error, as is an unknown exact name.
        """
        if isinstance(patterns, str):
            patterns = [p for p in (s.strip() for s in patterns.split(",")) if p]
        names: list[str] = []
        for pattern in patterns:
            if any(ch in pattern for ch in "*?["):
                matched = self.list(pattern)
                if not matched:
                    raise UnknownNameError(
                        f"no {self.kind} matches the pattern {pattern!r}; "
                        f"valid {self.kind} names: {', '.join(self.list())}"
                    )
            else:
                self.get(pattern)
                matched = [pattern]
            names.extend(n for n in matched if n not in names)
        if not names:
            raise UnknownNameError(f"no {self.kind} given (an empty list); name at least one, e.g. "
                                   f"{', '.join(self.list()[:3]) or 'a registered name'}")
        return names

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self._items, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: "
            f"{', '.join(self.list()) or '(none registered)'}. "
            f"Run `normbench list` to see every registered name."
        )

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} items)"


MODELS = Registry("model")
NORMS = Registry("strategy")
DATASETS = Registry("dataset")
SUITES = Registry("suite")
EXECUTORS = Registry("executor")
DIAGNOSTICS = Registry("diagnostic")
