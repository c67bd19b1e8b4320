"""The report's sections for the opt-in diagnostics and what each costs: tables appended to the report's
Markdown, CSVs under ``tables/``, and figure makers that the report draws with its others.

Each diagnostic declares its own section at registration (``report``, in :mod:`normbench.diagnostics`); this
module calls those in their declared order, each once, with a :class:`SectionView`, then adds the failed
diagnostics and the cost table, which are the same for every diagnostic."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import record as rec_mod
from ..builtins import load_builtins
from ..files import write_csv
from ..registry import DIAGNOSTICS
from . import plots, tables
from .render import markdown_table, slug


def _names(records) -> set[str]:
    return {row[2] for r in records for row in rec_mod.table_rows(r, "diagnostics")}


class SectionView:
    """What a diagnostic's report function gets: the records and the runs frame, the names of the diagnostics
    the records hold rows of, the report's table and plot helpers (``tables``, ``plots``), and ways to add a
    table (:meth:`table`), a figure (:meth:`figure`) and a guarded part (:meth:`section`) to the report."""

    tables, plots = tables, plots

    def __init__(self, records: list[dict], runs: pd.DataFrame, out: Path, md: list[str], section, names: set[str]):
        self.records, self.runs, self.out, self.md, self._section, self.names = records, runs, out, md, section, names
        self.figures: list[tuple[str, object]] = []

    def frame(self, name: str) -> pd.DataFrame:
        """One diagnostic's rows of every record (see :func:`normbench.report.tables.diagnostics_frame`)."""
        return tables.diagnostics_frame(self.records, self.runs, name)

    def section(self, title: str):
        """A part of the report that may not be makeable from these records: if it fails, it says why."""
        return self._section(self.md, title)

    def table(self, name: str, heading: str, text: str, table: pd.DataFrame, digits: int = 3) -> None:
        """One per-(dataset / model / strategy) table: its CSV under tables/, and its heading, text (its line breaks
        and runs of spaces made single spaces) and table."""
        write_csv(table, self.out / "tables" / f"{name}.csv")
        self.md += [heading, "", " ".join(text.split()), "", markdown_table(table.round(digits), corner="dataset / model / strategy"), ""]

    def figure(self, title: str, make) -> None:
        """A figure the report draws with its others: ``make()`` writes it and returns its path."""
        self.figures.append((title, make))

    def figure_path(self, name: str, *keys: str) -> Path:
        """figures/NAME_KEY1_KEY2.png, each key (a dataset, a model) made a file-name part."""
        return self.out / "figures" / ("_".join([name, *map(slug, keys)]) + ".png")

    @staticmethod
    def models_of(frame: pd.DataFrame) -> list[tuple[str, str]]:
        return sorted({(d, m) for d, m in zip(frame.dataset, frame.model)})


def _schedule() -> str:
    """When the registered diagnostics run, as the cost section says it: '`landscape` runs once at the end,
    `meanfield` once at initialization, the others at every epoch.'"""
    phrases = []
    for when, what in (("end", "at the end"), ("init", "at initialization")):
        names = [f"`{n}`" for n in DIAGNOSTICS if DIAGNOSTICS.get(n).when == when]
        if names:
            verb = ("runs " if len(names) == 1 else "run ") if not phrases else ""
            listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            phrases.append(f"{listed} {verb}once {what}")
    return ", ".join(phrases) + ", the others at every epoch." if phrases else "Each runs at every epoch."


def sections(records: list[dict], runs: pd.DataFrame, out: Path, md: list[str], section) -> list[tuple[str, object]]:
    """Append the diagnostics' sections to ``md``; return (title, make) for their figures."""
    names = _names(records)
    if not names:
        return []
    load_builtins()
    view = SectionView(records, runs, out, md, section, names)
    reports = []
    for name in sorted(DIAGNOSTICS, key=lambda n: (DIAGNOSTICS.get(n).report_order, n)):
        report = DIAGNOSTICS.get(name).report
        if report is not None and report not in reports:  # two diagnostics may share one section
            reports.append(report)
    for report in reports:
        report(view)

    failed = [(r["run_id"], *row) for r in records for row in r.get("diagnostics_errors") or []]  # absent: none failed
    if failed:
        md += ["Diagnostics that failed or do not apply to the model (`NotApplicable`; the runs went on without "
               "them at those epochs):", "",
               markdown_table(pd.DataFrame(failed, columns=["run", "epoch", "diagnostic", "error"]).set_index("run"),
                              corner="run"), ""]

    with section(md, "Diagnostics' cost"):
        cost = tables.diagnostic_cost(records, runs)
        write_csv(cost, out / "tables" / "diagnostic_cost.csv", index=False)
        table = cost.set_index(cost.dataset + " / " + cost.model + " / " + cost.diagnostic).drop(
            columns=["dataset", "model", "diagnostic"])
        md += ["## What the diagnostics cost", "",
               "Seconds each diagnostic took in a run (summed over the epochs it was measured at) against the run's "
               "training seconds (optimizer steps only), medians over runs; measured on the device in the "
               f"provenance table. {_schedule()}", "",
               markdown_table(table.round(2), corner="dataset / model / diagnostic"), ""]
    return view.figures
