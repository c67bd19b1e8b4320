"""The two test tiers: ``make test`` runs what is not marked ``slow``; ``make test-all`` (CI) runs everything.

A registry cross product is tiered, not cut: :func:`covering` keeps in the fast tier the cases that bring a value
not yet seen in any of their facets (every model, every strategy, ...) and marks the rest slow, so the fast tier
still builds every registered entry once and the slow tier the remaining pairs.
"""

from collections.abc import Callable, Iterable, Sequence

import pytest


def covering(cases: Iterable[Sequence], facets: Callable[[Sequence], Sequence], ids=None) -> list:
    """``pytest.param`` for each case, in order: fast when one of its facet values is new, else marked slow."""
    seen: set = set()
    params = []
    for case in cases:
        keys = set(enumerate(facets(case)))
        fast = not keys <= seen
        seen |= keys
        params.append(pytest.param(*case, marks=() if fast else (pytest.mark.slow,),
                                   id=ids(case) if ids else None))
    return params
