"""Model builders, registered in ``MODELS``.

A builder takes ``(input_shape, num_classes, strategy, **params)`` and returns a
Keras model whose hidden blocks come from :class:`normbench.norms.LayerStack`.
Variants (``mlp8``, ``vgg16``) are thin presets over one private function.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..norms import NormStrategy
from ..registry import MODELS
from . import cnn, mlp  # noqa: F401  (registers the builders)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, strategy: NormStrategy, **params: Any):
    """Build the registered model ``name``; unknown parameters name the valid ones."""
    builder = MODELS.get(name)
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("input_shape", "num_classes", "strategy")]
    bad = sorted(set(params) - set(accepted))
    if bad:
        raise ConfigError(f"model {name!r} takes no parameter(s) {bad}; it takes: {accepted or 'none'}")
    return builder(tuple(input_shape), int(num_classes), strategy, **params)


def describe(name: str) -> str:
    """First line of a builder's docstring."""
    doc = inspect.getdoc(MODELS.get(name)) or ""
    return doc.splitlines()[0] if doc else ""
