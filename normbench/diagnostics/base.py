"""What every diagnostic shares: how it is registered (and what it declares there), the exception for a model
it does not apply to, and the model's linear layers it measures.

A diagnostic declares at registration everything the rest of normbench needs to carry it:

- ``when`` it runs: ``"epoch"`` (every probe epoch, 0 = initialization), ``"init"`` (epoch 0 only) or ``"end"``
  (after the last epoch only); the runner reads it;
- ``tables``: the record sections it writes besides its rows in ``diagnostics`` (a diagnostic returning
  ``{"rows": ..., "tables": {name: {"columns": [...], "rows": [...]}}}``); the record's layout check
  (:mod:`normbench.record`) and the pack (:mod:`normbench.pack`) derive their lists of sections from these;
- ``report``: a function ``(view) -> None`` that writes its report section (see
  :class:`normbench.report.diagnostics.SectionView`: its frame, tables, figures); two diagnostics may share one;
- ``report_order``: where that section stands among the diagnostics' sections (smaller first).
"""

from __future__ import annotations

import functools

from ..errors import UnknownNameError
from ..registry import DIAGNOSTICS

WHEN = ("epoch", "init", "end")
CORE_SECTIONS = ("diagnostics", "diagnostics_errors")  # written by the runner for every diagnostic


class NotApplicable(Exception):
    """Raised by a diagnostic that does not apply to the model (the message says why). The runner records it
    with the diagnostics that failed (``diagnostics_errors``) and logs it: nothing is measured, and a silent empty
    result would look like a measurement that found nothing."""


def register(name: str, *, when: str = "epoch", tables: tuple[str, ...] = (), report=None, report_order: int = 100):
    """Register a diagnostic ``(model, context) -> rows`` under ``name`` with what it declares (module docstring).

    A diagnostic that returns a table it did not declare fails (the runner records the failure): an undeclared
    section would be checked by no reader and dropped by ``pack``."""
    if when not in WHEN:
        raise ValueError(f"diagnostic {name!r}: when must be one of {WHEN}, not {when!r}")
    clash = set(tables) & set(CORE_SECTIONS)
    if clash:
        raise ValueError(f"diagnostic {name!r}: the table name(s) {sorted(clash)} are the runner's own sections")

    def add(fn):
        @functools.wraps(fn)
        def diagnostic(model, context=None):
            out = fn(model, context)
            extra = sorted(set(out.get("tables", {})) - set(tables)) if isinstance(out, dict) else []
            if extra:
                raise ValueError(f"diagnostic {name!r} wrote the table(s) {extra}, which its registration does not "
                                 f"declare (tables={tuple(tables)})")
            return out

        diagnostic.when, diagnostic.tables = when, tuple(tables)
        diagnostic.at_init, diagnostic.at_end = when == "init", when == "end"
        diagnostic.report, diagnostic.report_order = report, report_order
        return DIAGNOSTICS.register(diagnostic, name=name)

    return add


def record_sections() -> tuple[str, ...]:
    """The record sections the registered diagnostics write besides ``diagnostics`` (sorted, once each)."""
    return tuple(sorted({t for name in DIAGNOSTICS for t in DIAGNOSTICS.get(name).tables}))


def check_names(names) -> list[str]:
    """The diagnostics a spec names, each registered (an unknown name lists the valid ones)."""
    for name in names:
        try:
            DIAGNOSTICS.get(name)
        except UnknownNameError as e:
            raise UnknownNameError(f"diagnostics = {list(names)!r}: {e}") from None
    return list(names)


def linear_layers(model) -> list[tuple[int, object]]:
    """(index, layer) of each hidden Dense/Conv2D layer (``hNN_linear``: index NN) and the logits layer (index -1);
    projection shortcuts are left out."""
    from ..layers import linear_kind

    out = []
    for layer in model.layers:
        if linear_kind(layer) is None:
            continue
        if layer.name == "logits":
            index = -1
        elif layer.name.startswith("h") and layer.name.endswith("_linear"):
            index = int(layer.name[1:3])
        else:
            continue  # projection shortcuts
        out.append((index, layer))
    return out


def kernels(model) -> list[tuple[int, object]]:
    """(index, kernel variable) of each layer of :func:`linear_layers`: v for a reparametrized kernel."""
    from ..layers import KernelReparametrization

    out = []
    for index, layer in linear_layers(model):
        inner = layer.layer if isinstance(layer, KernelReparametrization) else layer
        out.append((index, inner.kernel))
    return out
