"""The reporter: records -> tables (Markdown, CSV, LaTeX) and figures (PNG).

``make_report(results_dir, out_dir)`` reads the records of one results folder into
DataFrames and writes ``README.md``, ``tables/`` and ``figures/`` under ``out_dir``.
It never trains and never reads meaning from folder or file names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import record as rec_mod
from .. import reader
from ..check import refuse_conflicts
from ..errors import NormbenchError
from ..files import naming, refuse_link, write_csv, write_text
from ..norms import BATCH_STATISTICS
from . import convergence, diagnostics, frames, mechanisms, origin, plots, published, significance, tables, tuning
from .render import latex_table, markdown_table, slug


def check_consistent(runs: pd.DataFrame, results_dir, records: list[dict] = ()) -> None:
    """Refuse a folder whose tables would compare unlike runs: records of several Keras backends, or a cell holding
    runs made under different settings besides the seed (:func:`normbench.check.cell_conflicts`). A folder grown by
    several `normbench run` commands (several benchmark definitions or suite names) is reported as one."""
    backends = sorted(v for v in runs["backend"].dropna().unique())
    if len(backends) > 1:
        raise NormbenchError(
            f"{results_dir} mixes records of several Keras backends ({', '.join(map(str, backends))}); a report must "
            f"compare like with like. Move each into its own folder (normbench run --results DIR) and report each."
        )
    refuse_conflicts(list(records), str(results_dir))


def verdict_settings(records: list[dict]) -> tuple[str, float]:
    """The reference strategy and equivalence margin (points) the records' suite states (``[verdicts]`` in its file),
    else batch norm and 0.5 points; records that disagree are refused (their verdicts would not be one family)."""
    stated = {(v.get("reference", significance.REFERENCE), float(v.get("margin_points", significance.MARGIN_POINTS)))
              for v in (rec_mod.suite(r).get("verdicts") for r in records) if v}
    if len(stated) > 1:
        raise NormbenchError(f"the records state different verdict settings {sorted(stated)}: report each suite's "
                             f"records from its own folder")
    return stated.pop() if stated else (significance.REFERENCE, significance.MARGIN_POINTS)


def recipe(spec: dict) -> str:
    """One line of a spec's training settings: optimizer, rate and schedule, batch, weight decay, augmentation."""
    sgd = spec.get("optimizer", "sgd") == "sgd"
    momentum = (f" momentum {spec.get('momentum_start')} -> {spec.get('momentum')} over "
                f"{spec.get('momentum_ramp_epochs')} epochs" if spec.get("momentum_start") is not None
                else f" momentum {spec.get('momentum')}")
    parts = [f"{spec.get('optimizer', 'sgd')} lr {spec.get('learning_rate')}" + (momentum if sgd else ""),
             f"batch {spec.get('batch_size')}"]
    if spec.get("lr_schedule"):
        detail = {"step": f" (x{spec.get('lr_decay', 0.1)} at "
                          f"{', '.join(f'{m:.0%}' for m in spec.get('lr_milestones', [0.5, 0.75]))} of training)",
                  "exponential": f" (x{spec.get('lr_decay', 0.1)} per epoch)"}
        parts.append(f"{spec['lr_schedule']} schedule" + detail.get(spec["lr_schedule"], ""))
    if spec.get("warmup_epochs"):
        parts.append(f"{spec['warmup_epochs']} warm-up epochs")
    if spec.get("weight_decay"):
        parts.append(f"weight decay {spec['weight_decay']}")
    if spec.get("augment"):
        parts.append(f"augmentation {spec['augment']}")
    return ", ".join(parts)


def inputs(record: dict) -> str:
    """How a run's inputs were scaled, and whether every strategy got the same (schema 3) or its own (before)."""
    if record.get("schema_version", 0) < 3:
        return f"set by the strategy (schema-{record.get('schema_version')} records): standardized for SELU only"
    scaling = (record["data"].get("preprocessing") or {}).get("input_scaling", "unknown")  # absent: a failed run
    return f"{scaling} (the same for every strategy)"


def bn_evaluation(record: dict) -> str | None:
    """How a run with batch-norm layers was evaluated (None for a run without them)."""
    bn = record["data"].get("bn_statistics")
    if record.get("schema_version", 0) < 3:
        # strategy_config: absent in a failed run's record; schema 1 said batchnorm = "pre" | "post" | None
        config = record.get("strategy_config") or {}
        has_bn = config.get("norm") in BATCH_STATISTICS or config.get("batchnorm") is not None
        return (f"Keras' moving averages (schema-{record.get('schema_version')} records, made before precise BN: "
                f"biased against batch norm in short runs)") if has_bn else None
    if not bn:
        return None
    if bn.get("method") == "precise":
        return (f"statistics re-estimated on {bn.get('batches')} training batches ({bn.get('samples')} images) "
                f"before every evaluation (precise BN; the moving-average numbers are in the records as *_moving)")
    return "Keras' moving averages (precise_bn_batches = 0)"


def provenance(records: list[dict], runs: pd.DataFrame, trials: list[dict] = ()) -> list[tuple[str, str]]:
    """The header's rows: ``runs`` (the tables' runs) by status, then what every record read says about itself,
    counted over all of them (``records`` and a search's ``trials``) by :func:`origin.gather`."""
    read = [*records, *trials]
    agg = origin.gather(read)

    def uniq(values) -> str:
        vals = sorted({str(v) for v in values if v not in (None, "")})
        return ", ".join(vals) if vals else "unknown"

    rows = dict(origin.header_rows(agg))
    status = runs.status.value_counts()
    counted_runs = f"{len(runs)} ({', '.join(f'{n} {s}' for s, n in status.items())})"
    if trials:
        counted_runs += (f", and {len(trials)} search trials ({origin.statuses_text(origin.gather(list(trials)))}) "
                         f"read for the search section; the rows below count all {len(read)}")
    suites = [s for s in agg["suites"] if s != origin.NOT_RECORDED]
    return [
        ("suite", ", ".join(suites) if suites else "ad-hoc grid (no suite)"),
        ("runs", counted_runs),
        ("seeds", rows["seeds"]),
        ("epochs", rows["epochs"]),
        ("training samples", rows["training samples"]),
        ("data source", origin.counted(agg["data_sources"])),
        ("precision", rows["precision"]),
        ("training", uniq(recipe(r["spec"]) for r in read)),
        ("inputs", uniq(inputs(r) for r in read)),
        ("batch-norm evaluation", uniq(bn_evaluation(r) for r in read) if any(map(bn_evaluation, read))
         else "no batch-norm layers"),
        ("backend", rows["backend"]),
        ("Keras / NumPy / Python", rows["Keras / NumPy / Python"]),
        ("device", rows["device"]),
        ("engine", origin.counted(origin.tally(rec_mod.engine(r) for r in read))),
        ("runs sharing the device", rows["runs sharing the device"]),
        ("commit", rows["commit"]),
        ("runs finished", f"{agg['finished']['first']} to {agg['finished']['last']}" if agg["finished"] != origin.NOT_RECORDED
         else "unknown"),
    ]


def contention_note(runs: pd.DataFrame) -> str | None:
    """A warning for tables that show seconds, when some runs shared their device with others (or may have)."""
    shared = runs[runs.concurrent_runs.fillna(0) > 1]
    unknown = runs[runs.concurrent_runs.isna()]
    if not len(shared) and not len(unknown):
        return None
    parts = []
    if len(shared):
        parts.append(f"{len(shared)} of {len(runs)} runs shared the device with up to "
                     f"{int(shared.concurrent_runs.max()) - 1} other runs")
    if len(unknown):
        parts.append(f"{len(unknown)} of {len(runs)} runs do not record whether they shared it (schema 1)")
    return ("**Seconds measured under contention**: " + "; ".join(parts) + ". Their seconds are not comparable "
            "with seconds of runs that had the device to themselves; epochs, accuracies and statistics are unaffected.")


@contextlib.contextmanager
def section(md: list[str], title: str):
    """A part of the report that may not be makeable from these records: if it fails, say why and go on."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:  # a file that could not be written (a full disk): not these records' fault
            raise
        md += ["", f"_{title}: cannot be made from these records ({type(e).__name__}: {e})._", ""]
    except Exception as e:  # noqa: BLE001  (the reason is printed in the report, the other sections still come)
        md += ["", f"_{title}: cannot be made from these records ({type(e).__name__}: {e})._", ""]


@contextlib.contextmanager
def staged(out_dir: Path):
    """A temporary folder beside ``out_dir`` to write into; on success every file is moved into place.

    A report that fails part-way leaves ``out_dir`` as it was: no half-written set of tables.
    Other files in ``out_dir`` (papers.md, perf.md, the baseline) are left alone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.report-"))
    try:
        try:
            yield tmp
        except OSError as e:  # a full disk names the report's file, not the temporary folder's copy of it
            if e.filename is None or not str(e.filename).startswith(str(tmp)):
                raise
            raise type(e)(e.errno, e.strerror, str(out_dir / Path(e.filename).relative_to(tmp))) from e
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = out_dir / path.relative_to(tmp)
            for folder in reversed(target.relative_to(out_dir).parents[:-1]):  # tables/, figures/: never a link out
                refuse_link(out_dir / folder, "a folder of the report")
            target.parent.mkdir(parents=True, exist_ok=True)
            with naming(target):  # moved over a link, the link itself is replaced: nothing is written through it
                os.replace(path, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_report(results_dir, out_dir, thresholds: dict[str, float] | None = None, log=print,
                published_dir=None) -> Path:
    """Write the report of ``results_dir`` into ``out_dir``; return the Markdown file. With ``published_dir`` (a
    published pack), the report ends with each cell beside the published one, and the log says how many lie
    inside the published intervals."""
    final = Path(out_dir)
    against = published.load_published(published_dir) if published_dir is not None else None
    with staged(final) as tmp:
        n_runs, n_figures, said = _write_report(results_dir, tmp, thresholds, against, published_dir)
    target = final / "README.md"
    log(f"report: {target} ({n_runs} runs, {n_figures} figures, tables in {final / 'tables'})")
    if said:
        log(f"against the published numbers: {said}")
    return target


def _published_section(records: list[dict], against: list[dict], where, out: Path, md: list[str]) -> str:
    """The report's last section: each cell beside the published one; returns the one-sentence summary."""
    table = published.compare(records, against)
    write_csv(table, out / "tables" / "published.csv", index=False)
    said = published.summary(table, where)
    view = table.assign(yours=[f"{m:.4f} (n={n})" if n else "no finished run" for m, n in zip(table["mean"], table.n)],
                        published=[f"{m:.4f} [{lo:.4f}, {hi:.4f}] (n={n})" if n > 1 else ("-" if not n else f"{m:.4f}")
                                   for m, lo, hi, n in zip(table.published_mean, table.published_low,
                                                           table.published_high, table.published_n)],
                        verdict=["inside" if i else ("outside" if c else "not compared") for i, c in
                                 zip(table.inside, table.comparable)])
    view = view.set_index(view.dataset + " / " + view.model + " / " + view.strategy)[
        ["yours", "published", "verdict", "note"]]
    md += ["## Against the published numbers", "",
           f"Each cell's mean final test accuracy beside the same cell of `{where}` (finals of the same search: the "
           f"same trials and the same final specs, so the same run ids), with the published 95% t interval of the "
           f"mean. Inside it means these runs reproduce the published cell within its seed spread; float round-off "
           f"alone moves same-seed runs by up to about 0.8 points on another machine. {said}", "",
           markdown_table(view, corner="dataset / model / strategy"), ""]
    return said


def _write_report(results_dir, out: Path, thresholds: dict[str, float] | None, against=None,
                  where=None) -> tuple[int, int, str]:
    records = reader.load_records(results_dir)
    if not records:
        inner = sorted(p.name for p in Path(results_dir).iterdir() if reader.holds_records(p))
        if inner:
            raise NormbenchError(f"{results_dir} holds no records itself, but its sub-folders {', '.join(inner)} do; "
                                 f"report one of them (--results {Path(results_dir) / inner[0]})")
        raise NormbenchError(f"{results_dir} holds no records; run `normbench run --results {results_dir}` first.")
    # a search's trials get their own section, not the tables; trials without finals yet are reported as runs
    finals = [r for r in records if tuning.phase(r) != "trial"]
    trials = [r for r in records if tuning.phase(r) == "trial"] if finals else []
    records = finals or records
    runs = frames.runs_frame(records)
    unmatched = sorted(set(thresholds or {}) - set(runs.dataset))
    if unmatched:
        raise NormbenchError(f"--threshold for {', '.join(unmatched)}: no run in {results_dir} used that dataset "
                             f"(they used {', '.join(sorted(runs.dataset.unique()))}); drop it or report another folder")
    thresholds = {**tables.DEFAULT_THRESHOLDS, **(thresholds or {})}
    check_consistent(runs, results_dir, records)
    long = frames.long_frame(records)
    history = tables.history_frame(long)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    md: list[str] = ["# normbench results", "", "Generated by `normbench report` from the run records; do not edit by hand.", ""]
    md += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in provenance(records, runs, trials)] + [""]
    md += ["Counted over every record this report read; the same counts as JSON: `tables/provenance.json`.", ""]
    old = sorted({r.get("schema_version") for r in records if r.get("schema_version", 0) < 3})
    if old:
        md += [f"**Superseded for comparing strategies.** These records (schema {', '.join(map(str, old))}) predate "
               f"fair comparisons (record schema 3): batch-norm layers were evaluated with Keras' moving averages "
               f"(biased against batch norm when runs are short), only SELU got standardized inputs, group norm could "
               f"have one channel per group, layer and RMS norm differed in axes and epsilon, and every strategy "
               f"trained at one untuned learning rate. The statistics and verdicts below are computed from them as "
               f"they are.", ""]
    write_text(out / "tables" / "provenance.json", origin.to_json(origin.gather([*records, *trials])))

    def caption_of(subset: list[dict]) -> str:
        """The provenance of the runs in one table, for its TeX caption."""
        return " " + origin.caption(origin.gather(subset))

    def of_dataset(dataset: str) -> list[dict]:
        return [r for r in records if r["spec"].get("dataset") == dataset]

    summary = tables.accuracy_summary(runs)
    write_csv(summary, out / "tables" / "accuracy.csv", index=False)
    pairs = significance.pairwise(runs)
    write_csv(pairs, out / "tables" / "pairwise.csv", index=False)
    verdicts = significance.verdicts(runs, pairs)
    write_csv(verdicts, out / "tables" / "verdicts.csv", index=False)
    gaps = significance.gap_to_reference(runs)
    if not gaps.empty:
        write_csv(gaps, out / "tables" / "gap_to_bn.csv", index=False)
    md += ["## Test accuracy", "",
           "Final test accuracy, mean ± half-width of the 95% t confidence interval of the mean over seeds (n = runs "
           "that finished; no interval when n < 2; std in `tables/accuracy.csv`). Bold: the strategy the verdict "
           "below calls best over all pairs (none when no single strategy is best). Runs that did not finish are "
           "named in the cell; the mean and n here are of finished runs, while the verdicts score a diverged run at "
           "chance accuracy.", ""]
    for dataset in sorted(runs.dataset.unique()):
        text, best = tables.accuracy_cells(summary, verdicts, dataset)
        source = ", ".join(sorted(runs[runs.dataset == dataset].source.dropna().unique()))
        md += [f"### {dataset}", "", f"Data: {source}.", "", markdown_table(text, best, corner="model"), ""]
        write_text(out / "tables" / f"accuracy_{slug(dataset)}.tex",
            latex_table(text, best, caption=f"Test accuracy on {source}: mean ± half-width of the 95% t confidence "
                                          f"interval of the mean over seeds (n finished runs; ± is not a standard "
                                          f"deviation, which is in accuracy.csv; no ± when n < 2); bold: best after "
                                          f"Holm-corrected Welch tests.{caption_of(of_dataset(dataset))}",
                        label=f"tab:acc-{slug(dataset)}"))
        if not gaps.empty and (gaps.dataset == dataset).any():
            md += ["Gap to batch norm: each strategy's mean test accuracy minus batch norm's on the same model, in "
                   "percentage points (negative: below BN), with its 95% Welch confidence interval in brackets "
                   "(none when either side has fewer than 2 finished runs).", "",
                   markdown_table(tables.gap_cells(gaps, dataset), corner="model"), ""]

    reference, margin = verdict_settings(records)
    primary = significance.reference_tests(runs, reference, margin)
    write_csv(primary, out / "tables" / "reference_tests.csv", index=False)
    md += ["## Verdicts", "",
           f"Generated from the tests, per (dataset, model). **Primary family: every strategy against `{reference}`** "
           f"(the suite's reference): two-sided Welch t-tests of per-seed final test accuracy, Holm-adjusted over the "
           f"k-1 comparisons of that (dataset, model); the interval beside each gap (percentage points) is adjusted to "
           f"the same family (each at the level of the Holm step that tested it, {significance.ALPHA} / (k-1) for the "
           f"smallest p, so an interval excludes 0 exactly when the adjusted p < {significance.ALPHA}). 'above' / 'below': adjusted p < "
           f"{significance.ALPHA}. 'equivalent': a TOST shows the gap inside +-{margin:g} points (the suite's margin; "
           f"Holm-adjusted). 'not separable': neither, which is not equal; the bracket gives the smallest gap these "
           f"seeds could have detected (two-sided, family level, {significance.POWER:.0%} power, from the cell's "
           f"spread). A diverged run counts, scored at chance accuracy; a run that ended in an error is not scored and "
           f"leaves its comparison 'incomplete'. Every comparison: `tables/reference_tests.csv`.", ""]
    flags = {}
    with section(md, "Mechanism flags"):
        flags = mechanisms.never_engaged(records)  # a strategy whose mechanism never engaged, flagged where ranked
    md += [f"- {sentence}" for sentence in significance.reference_sentences(primary, flags)] + [""]
    if primary.empty:
        md += [f"_No primary family: no (dataset, model) has scored runs of `{reference}`._", ""]
    md += ["### All pairs (secondary)", "",
           "Welch t-tests between every two strategies, Holm-corrected over all pairs of the (dataset, model): a "
           "strategy is best only when it beats every other one; otherwise the strategies not separable from the top "
           "one are named (not separable is not equal). An undefined test (fewer than 2 scored runs on a side, or two "
           "different constants) is named and left out of the family. All pairs: `tables/pairwise.csv`.", ""]
    md += [f"- {sentence}" for sentence in verdicts.sentence] + [""]

    # which cells converged, learning curves, time to the validation target, rank stability across budgets
    curve_figures = convergence.section(records, runs, history, out, md, section)

    free = significance.versus(pairs)
    if not free.empty:
        write_csv(free, out / "tables" / "norm_free.csv", index=False)
        md += ["## Normalization-free strategies", "",
               f"Each alternative to normalizing activations ({', '.join(f'`{s}`' for s in significance.NORM_FREE)}) "
               f"against batch norm, layer norm and SELU on the same model: mean test-accuracy difference in "
               f"percentage points [95% Welch interval], from the verdicts' pairwise family, so the p-values are "
               f"Holm-adjusted over all its pairs. 'not separable' (adjusted p >= {significance.ALPHA}) means these "
               f"seeds cannot tell the two apart, not that they are equal. All rows: `tables/norm_free.csv`.", "",
               markdown_table(tables.versus_cells(free), corner="dataset / model / strategy"), ""]
        md += [f"- {sentence}" for sentence in significance.versus_sentences(free)] + [""]

    md += ["## Time to a validation-accuracy threshold", "",
           "Epochs (and training seconds) until the validation accuracy first reaches the threshold, mean over "
           "seeds that reached it.", ""]
    caveat = contention_note(runs)
    if caveat:
        md += [caveat, ""]
    with section(md, "Time to threshold"):
        ttt = tables.time_to_threshold(runs, history, thresholds)
        write_csv(ttt, out / "tables" / "time_to_threshold.csv", index=False)
        for dataset in sorted(runs.dataset.unique()):
            text = tables.threshold_cells(ttt, dataset)
            md += [f"### {dataset}: validation accuracy >= {thresholds.get(dataset)}", "", markdown_table(text, corner="model"), ""]
            write_text(out / "tables" / f"time_to_threshold_{slug(dataset)}.tex",
                latex_table(text, caption=f"Epochs (seconds) to validation accuracy {thresholds.get(dataset)} on "
                                          f"{dataset}: mean over the seeds that reached it (no ± in this table). "
                                          f"Runs sharing the device: "
                                          f"{origin.contention_text(origin.gather(of_dataset(dataset)))}."
                                          f"{caption_of(of_dataset(dataset))}", label=f"tab:ttt-{slug(dataset)}"))

    md += ["## Signal drift through depth", "",
           "Per (model, strategy): the largest |activation mean| over hidden layers and the range of activation std "
           "over layers, at initialization and after training, and the fraction of dead/saturated outputs (and of units "
           "dead for every probe sample) in the last hidden layer. Measured on a fixed probe batch of the validation "
           "split in inference mode. Per-layer values: `tables/layer_stats.csv`.", ""]
    layers = None
    with section(md, "Signal drift"):
        layers = tables.layer_stats(long, runs)
        measured = set(long[long.tap == "act"].run_id)  # the runs whose statistics the drift table averages
        write_csv(layers, out / "tables" / "layer_stats.csv", index=False)
        drift = tables.drift_summary(layers)
        write_csv(drift, out / "tables" / "drift.csv", index=False)
        view = drift.copy()
        for when in ("init", "end"):
            view[f"{when}: max abs mean"] = view.pop(f"{when}_max_abs_mean").map("{:.3f}".format)
            view[f"{when}: std range"] = [f"{a:.3f}-{b:.3f}" for a, b in zip(view.pop(f"{when}_std_min"), view.pop(f"{when}_std_max"))]
            view[f"{when}: last sat/dead"] = [f"{a:.2f} / {b:.2f}" for a, b in zip(view.pop(f"{when}_last_sat_frac"), view.pop(f"{when}_last_dead_units"))]
        view = view.set_index(view.dataset + " / " + view.model + " / " + view.strategy).drop(columns=["dataset", "model", "strategy"])
        md += [markdown_table(view, corner="dataset / model / strategy"), ""]
        write_text(out / "tables" / "drift.tex", latex_table(view, caption=(
            f"Signal drift through depth: per-layer values averaged over seeds first (no ± in this table)."
            f"{caption_of([r for r in records if r['run_id'] in measured])}"), label="tab:drift"))

    md += ["## Strategies compared", ""]
    finished = runs[runs.status == "ok"]
    if finished.strategy.nunique() < 2:
        md += [f"Rank test: need two strategies with finished runs; these records have "
               f"{finished.strategy.nunique()} ({', '.join(sorted(finished.strategy.unique())) or 'none'}).", ""]
    else:
        with section(md, "Rank test"):
            ranks, friedman = significance.rank_test(runs)
            write_csv(ranks, out / "tables" / "ranks.csv", index=False)
            md += ["Average rank of test accuracy (1 = best) across configurations. " + friedman["note"], "",
                   markdown_table(ranks.set_index("strategy").round(3), corner="strategy"), ""]

    sweep = runs.batch_size.nunique() > 1
    if sweep:
        with section(md, "Test error against batch size"):
            table = tables.error_by_batch_size(runs)
            write_csv(table, out / "tables" / "batch_size.csv")
            md += ["## Test error against batch size", "",
                   "Test error (%) per (dataset / model / strategy), mean over seeds, one column per batch size "
                   "(the learning rate as the suite sets it, e.g. scaled linearly with the batch). Strategies "
                   "that need batch statistics: "
                   + (", ".join(sorted(tables.batch_dependent(runs.strategy_name.unique()))) or "none") + ".", "",
                   markdown_table(table.round(2), corner="dataset / model / strategy"), ""]

    diagnostic_figures = diagnostics.sections(records, runs, out, md, section)
    mechanisms.section(records, runs, out, md, section)  # what each mechanism did; those that never engaged
    diagnostic_figures += tuning.sections(trials, out, md, section, records)

    md += ["## Figures", ""]
    figures = []
    makers = [("Training loss", lambda: plots.training_loss(history, runs, out / "figures" / "training_loss.png")),
              ("Test accuracy against depth", lambda: plots.accuracy_vs_depth(runs, out / "figures" / "accuracy_vs_depth.png"))]
    if sweep:
        makers.append(("Test error against batch size",
                       lambda: plots.error_vs_batch_size(runs, out / "figures" / "error_vs_batch_size.png")))
    for (dataset, model), _ in (layers.groupby(["dataset", "model"]) if layers is not None else []):  # models with statistics
        tag = f"{slug(dataset)}_{slug(model)}"
        makers.append((f"{dataset} / {model}: signal propagation",
                       lambda d=dataset, m=model, t=tag: plots.signal_propagation(layers, d, m, out / "figures" / f"signal_{t}.png")))
        makers.append((f"{dataset} / {model}: last hidden layer pre-activation percentiles",
                       lambda d=dataset, m=model, t=tag: plots.preactivation_bands(long, runs, d, m, out / "figures" / f"preact_{t}.png")))
    makers += diagnostic_figures
    for title, make in makers:
        with section(md, f"Figure '{title}'"):
            path = make()
            figures.append((title, path))
            md += [f"### {title}", "", f"![{title}](figures/{path.name})", ""]

    said = ""
    if against is not None:
        said = _published_section(records, against, where, out, md)

    failed = runs[runs.status != "ok"]
    md += ["## Runs that did not finish", ""]
    if len(failed):
        md += [markdown_table(failed.set_index("run_id")[["dataset", "model", "strategy", "seed", "status", "diverged_epoch", "error"]].fillna(""), corner="run")]
    else:
        md += ["None: every run finished."]
    md += ["", f"_Report written {datetime.now(timezone.utc).isoformat(timespec='seconds')}._", ""]
    write_text(out / "README.md", "\n".join(md))
    return len(runs), len(figures) + curve_figures, said
