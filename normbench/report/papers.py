"""Paper replications: our numbers beside the published ones, and a verdict per claim.

Each section reads the records of one paper suite (``paper-snn``, ``paper-bn``,
``paper-maxnorm``) and writes figures in the paper's format, a table, and a grade per claim
(reproduced / partly reproduced / not reproduced / inconclusive) computed from the records by
the criteria stated in the text: a claim about the course of training is inconclusive on less
than ``MIN_COVERAGE`` of the paper's length, a comparison when a network never started
training. The section's verdict comes from its claims' grades (:func:`overall`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import reader
from ..record import test_metrics
from ..spec import RunSpec
from ..suites import get_suite
from ..files import subfolder, write_text
from . import frames, origin, plots
from .render import markdown_table

# Published: Srivastava et al. 2014, MNIST, 784-1024-1024-2048-10 ReLU net (test error, %).
PAPER_SUITES = ("paper-snn", "paper-bn", "paper-maxnorm")  # the folders `report --papers DIR` reads
DROPOUT_PAPER = {"max-norm alone": 1.35, "dropout + max-norm": 1.05}

# The criteria every verdict is graded by (stated in the report beside each verdict).
PAPER_LENGTH = {"snn": ("epochs", 2000), "bn": ("steps", 50_000), "maxnorm": ("updates", 1_000_000)}
MIN_COVERAGE = 0.10  # a claim about the course of training is inconclusive on less than this share of the paper's run
MIN_COMPARISONS = 10  # "falls steadily" needs at least this many epoch-to-epoch comparisons per run
CHANCE_LOSS = float(np.log(10))  # cross-entropy of a uniform guess over 10 classes: below it, a net has started
MOST_PROBES = 0.9  # (a) holds when BN is at least the baseline's accuracy at this share of probe points and at the end
DRIFT_MARGIN = 0.8  # one seed, no interval: BN's drift counts as smaller only at <= 0.8x the baseline's (>= 1.25x: larger)


def grade_of(held: int, of: int) -> str:
    """A claim's grade from how many of its checks held."""
    return "reproduced" if held == of else "not reproduced" if held == 0 else "partly reproduced"


def overall(grades: list[str]) -> str:
    """A paper's verdict from its claims': inconclusive claims decide nothing; the decided ones must agree."""
    decided = [g for g in grades if g != "inconclusive"]
    if not decided:
        return "inconclusive"
    if len(set(decided)) == 1 and (len(decided) == len(grades) or decided[0] == "not reproduced"):
        return decided[0]
    return "partly reproduced"


def coverage(paper: str, done: float) -> tuple[float, str]:
    """The share of the paper's run that ours covers, and a sentence saying so."""
    unit, length = PAPER_LENGTH[paper]
    share = done / length
    return share, f"{done:,.0f} of the paper's {length:,} {unit} ({100 * share:.3g}%)"


def updates(records: list[dict]) -> int:
    """The most optimizer updates any of the runs made (epochs x batches per epoch)."""
    return max((int(r["spec"]["epochs"] * np.ceil(r["data"]["sizes"]["train"] / r["spec"]["batch_size"]))
                for r in records if r.get("data")), default=0)


def _ratio(ours: float, theirs: float) -> float:
    """ours / theirs, with two zero drifts the same (1) and a drift against none infinitely larger."""
    return ours / theirs if theirs > 0 else 1.0 if ours == 0 else float("inf")


def _claims_md(claims: list[tuple[str, str, str]]) -> list[str]:
    """One line per claim: its grade, then the numbers the grade was computed from."""
    return [f"- {claim}: **{grade}**. {numbers}" for claim, grade, numbers in claims] + [""]


# Each replication's set-up against the paper's, and what still differs (aspect, paper, normbench).
DIFFERENCES = {
    "snn": [
        ("training loss plotted", "running mean of per-batch losses, BN in training mode",
         "the same (`fit_loss`); the inference-mode loss beside it"),
        ("input standardization", "per feature (pixel)", "per feature (`standardize_feature`), constant pixels keep std 1"),
        ("epochs", "2000", "3 in `paper-snn` (CPU); 2000 in `paper-snn-full`"),
        ("CIFAR-10 images", "the original images, all of them", "the JPEG re-encoded pack; 2000 images in `paper-snn`"),
        ("seeds", "several", "1"),
    ],
    "bn": [
        ("images", "binary 28x28", "MNIST binarized at 128 (`mnist_binary`)"),
        ("steps", "50,000, batch 60", "55 epochs x 917 = 50,435 steps, batch 60"),
        ("optimizer", "not stated", "plain SGD, lr 0.5"),
        ("drift at step 0", "-", "excluded: the BN net is probed with moving statistics (0, 1) there"),
    ],
    "maxnorm": [
        ("momentum", "ramped up to 0.95 during training",
         "constant 0.95 in `paper-maxnorm` (10 epochs); `paper-maxnorm-full`: linear 0.5 -> 0.95 over the first 500 "
         "epochs (`momentum_start`, `momentum_ramp_epochs`)"),
        ("learning rate", "decayed exponentially during training",
         "constant 0.05 in `paper-maxnorm`; `paper-maxnorm-full`: x0.998 per epoch (`lr_schedule = \"exponential\"`)"),
        ("ramp and decay constants", "Hinton et al. 2012's MNIST recipe (0.5 start, 500 epochs, 0.998)",
         "taken from that recipe as normbench's authors know it; not checked against the paper's text here"),
        ("updates", "about 1,000,000", "5,500 in `paper-maxnorm`; 990,000 in `paper-maxnorm-full` (GPU, not run yet)"),
        ("constrained layers", "every layer", "hidden layers only: the logits layer is unconstrained"),
    ],
}


def _differences(paper: str) -> list[str]:
    table = pd.DataFrame(DIFFERENCES[paper], columns=["aspect", "paper", "normbench"]).set_index("aspect")
    return ["Set-up, the paper's against normbench's (what still differs is stated, not fixed):", "",
            markdown_table(table, corner="aspect"), ""]


def has_records(folder: Path) -> bool:
    """``folder`` holds records: JSON files or a pack (``normbench pack``)."""
    return reader.holds_records(folder)


def _records(folder: Path) -> list[dict]:
    return reader.load_records(folder) if has_records(folder) else []


def _header(title: str, suite: str, records: list[dict]) -> list[str]:
    """A section's title, then where its numbers come from, or that the suite was not (fully) run."""
    if not records:
        return [f"## {title}", "", f"Not run: `normbench run --suite {suite} --results runs/{suite}`.", ""]
    md = [f"## {title}", "", f"Records: {origin.sentence(origin.gather(records))}.", ""]
    try:
        expected = get_suite(suite).specs
    except Exception:  # no suite files (installed without a checkout): nothing to compare with
        return md
    return md + _against_suite(suite, expected, records)


def _setting(value) -> str:
    return "unset" if value is None else f"`{value!r}`"


def _against_suite(suite: str, expected: list, records: list[dict]) -> list[str]:
    """What the records lack of the suite as it is defined now, and which settings changed since they were made.

    A record whose run id the suite no longer has is matched to the current run of the same dataset, model, model
    and strategy parameters and seed (the closest one, by the number of differing settings)."""
    present, expected_ids = {r["run_id"] for r in records}, {s.run_id for s in expected}
    missing = [s for s in expected if s.run_id not in present]
    if not missing:
        return []
    changed: dict[str, set] = {}
    unmatched = {s.run_id: s.canonical() for s in missing}  # the suite's runs no record has matched yet
    for rec in records:
        if rec["run_id"] in expected_ids:
            continue
        old = RunSpec.from_dict(rec["spec"]).canonical()
        same_run = {run_id: now for run_id, now in unmatched.items()
                    if all(now.get(k) == old.get(k) for k in ("dataset", "model", "model_params", "strategy", "seed"))}
        if not same_run:
            continue
        diffs = {run_id: {k for k in set(old) | set(now) if old.get(k) != now.get(k)} for run_id, now in same_run.items()}
        best = min(diffs, key=lambda run_id: len(diffs[run_id]))
        now = unmatched.pop(best)
        for key in diffs[best]:
            changed.setdefault(key, set()).add(f"was {_setting(old.get(key))}, now {_setting(now.get(key))}")
    md = []
    if len(unmatched) < len(missing):
        settings = "; ".join(f"`{k}` ({'; '.join(sorted(v))})" for k, v in sorted(changed.items()))
        md += [f"**Made under an earlier definition of the suite:** {len(missing) - len(unmatched)} of these records "
               f"match a run of `{suite}` by dataset, model, strategy and seed, but the suite's settings have changed "
               f"since: {settings}. Each record states the settings it ran with; the verdict covers the records as "
               f"they are. `normbench run --suite {suite} --results runs/{suite}` trains the current definition.", ""]
    if unmatched:
        md += [f"**Incomplete: {len(expected) - len(unmatched)} of the suite's {len(expected)} runs are present**; the "
               f"verdict below covers only those. Finish with `normbench run --suite {suite} --results runs/{suite}` "
               f"(completed runs are skipped).", ""]
    return md


def snn_section(records: list[dict], figures: Path) -> list[str]:
    md = _header("Self-normalizing networks (Klambauer et al. 2017), Figure 1", "paper-snn", records)
    if not records:
        return md
    runs = frames.runs_frame(records)
    long = frames.long_frame(records)
    metrics = long[long.tap == "metric"].merge(runs[["run_id", "depth"]], on="run_id")
    hist = metrics[metrics.quantity == "train_loss"]
    fit = metrics[metrics.quantity == "fit_loss"]
    md += ["Claim: SNN training-loss curves fall steadily at every depth, while BN curves are noisier and deep BN nets "
           "train worse. The paper's curves are the training loss as its code logs it: the running mean of the "
           "per-batch losses during each epoch, BN in training mode (batch statistics); that is `fit_loss` here, "
           "and it decides the verdict. The inference-mode loss on the training split (BN with its moving "
           "statistics) stands beside it. Rule: per run, *steady* = `fit_loss` never rises from one epoch to the "
           "next; the first claim is reproduced when every SELU run is steady, the second when, at the largest depth, "
           "BN ends with a higher `fit_loss` than SELU on every dataset.", ""]
    rows = []
    for (dataset, strategy, depth), g in fit.groupby(["dataset", "strategy", "depth"]):
        v = g.sort_values("epoch").value.to_numpy(dtype=float)
        inference = hist[(hist.dataset == dataset) & (hist.strategy == strategy) & (hist.depth == depth)]
        w = inference.sort_values("epoch").value.to_numpy(dtype=float)
        rows.append({"dataset": dataset, "strategy": strategy, "depth": int(depth), "first-epoch loss": v[0],
                     "final loss": v[-1], "rises": int((np.diff(v) > 0).sum()), "steady": bool((np.diff(v) <= 0).all()),
                     "inference-mode final loss": w[-1] if len(w) else np.nan,
                     "inference-mode rises": int((np.diff(w) > 0).sum()) if len(w) else 0})
    table = pd.DataFrame(rows)
    md += [markdown_table(table.set_index(table.dataset + " / " + table.strategy).drop(columns=["dataset", "strategy"]),
                          corner="dataset / strategy"), ""]
    selu = table[table.strategy.str.startswith("selu")]
    bn = table[table.strategy.str.startswith("batchnorm_post")]
    epochs = max(r["spec"]["epochs"] for r in records)
    share, covered = coverage("snn", epochs)
    short = share < MIN_COVERAGE
    comparisons = epochs - 1
    steady_n = int(selu.steady.sum())
    steady_grade = ("inconclusive" if short or comparisons < MIN_COMPARISONS
                    else grade_of(steady_n, len(selu)) if len(selu) else "inconclusive")
    # the largest depth at which both strategies have a run, per dataset
    deep, never_started = {}, []
    for d in sorted(table.dataset.unique()):
        both = set(selu[selu.dataset == d].depth) & set(bn[bn.dataset == d].depth)
        if both:
            depth = max(both)
            bn_deep = bn[(bn.dataset == d) & (bn.depth == depth)]
            lowest = fit[(fit.dataset == d) & fit.strategy.str.startswith("batchnorm_post") & (fit.depth == depth)].value
            if lowest.min() >= CHANCE_LOSS:
                never_started.append(f"{d} depth {depth}")
            deep[f"{d} depth {depth}"] = bool(
                bn_deep["final loss"].min() > selu[(selu.dataset == d) & (selu.depth == depth)]["final loss"].max())
    deep_grade = ("inconclusive" if short or never_started or not deep
                  else grade_of(sum(deep.values()), len(deep)))
    compared = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in deep.items()) or "no depth with both"
    claims = [
        ("SELU's training loss falls steadily at every depth", steady_grade,
         f"Steady in {steady_n} of {len(selu)} SELU runs, each over {comparisons} epoch-to-epoch comparison(s) "
         f"(at least {MIN_COMPARISONS} needed); the runs cover {covered} (at least {MIN_COVERAGE:.0%} needed)."),
        ("deep BN nets train worse than SELU", deep_grade,
         f"BN ends with a higher `fit_loss` than SELU at the largest depth with both: {compared}. "
         + (f"BN never started training there ({', '.join(never_started)}: its `fit_loss` never fell below "
            f"chance, ln 10 = {CHANCE_LOSS:.2f}), so a higher loss says nothing about depth. " if never_started else "")
         + f"The runs cover {covered}."),
    ]
    md += [f"**Verdict: {overall([g for _, g, _ in claims])}**, claim by claim (the criteria: a claim about the course "
           f"of training needs {MIN_COVERAGE:.0%} of the paper's length, and a comparison needs both networks to have "
           "started training):", ""] + _claims_md(claims)
    md += ["CIFAR-10 is the JPEG re-encoding when the source says so, and the CPU variant trains CIFAR-10 on a subset: "
           "with lr 1e-5 only the first part of the paper's curves is covered.", ""]
    md += _differences("snn")
    d = fit.rename(columns={"value": "train_loss"})
    path = plots.training_loss(d[["run_id", "epoch", "train_loss"]], runs, figures / "paper_snn_training_loss.png",
                               quantity="fit_loss: per-batch mean, BN in training mode")
    d = hist.rename(columns={"value": "train_loss"})
    path_inf = plots.training_loss(d[["run_id", "epoch", "train_loss"]], runs, figures / "paper_snn_inference_loss.png",
                                   quantity="inference mode")
    return md + [f"![SNN Figure 1 format: fit_loss, the paper's quantity](figures/{path.name})", "",
                 f"![The same runs' inference-mode training loss (epoch 0 = initialization)](figures/{path_inf.name})", ""]


def bn_section(records: list[dict], figures: Path) -> list[str]:
    md = _header("Batch normalization (Ioffe & Szegedy 2015), Figure 1", "paper-bn", records)
    if not records:
        return md
    md += ["Claims: (a) the BN net reaches higher test accuracy sooner; (b, c) the distribution of the sigmoid input of "
           "a fixed last-hidden-layer unit (15th/50th/85th percentiles over the probe batch) stays stable with BN and "
           f"drifts without. Rules: (a) holds when BN's test accuracy is at least the baseline's at {MOST_PROBES:.0%} "
           "of the probe points and at the end (partly at half of them); (b, c): each percentile's range over "
           f"training (step 0 excluded) counts as smaller with BN at <= {DRIFT_MARGIN}x the baseline's (one seed: no "
           "interval, so a margin instead), and the claim holds when all three are smaller.", ""]
    steps, unit, final = [], [], {}
    for rec in records:
        if not rec.get("steps"):
            continue
        s = pd.DataFrame(rec["steps"]["rows"], columns=rec["steps"]["columns"])
        s["strategy"] = rec["spec"]["strategy"]
        steps.append(s)
        final[rec["spec"]["strategy"]] = test_metrics(rec).get("accuracy", np.nan)
        st = pd.DataFrame(rec["step_stats"]["rows"], columns=rec["step_stats"]["columns"])
        last = st.layer.max()
        u = st[(st.layer == last) & (st.tap == "pre") & st.quantity.str.startswith("u0_")]
        u = u.pivot_table(index="step", columns="quantity", values="value").reset_index()
        u["strategy"] = rec["spec"]["strategy"]
        unit.append(u)
    if not steps:
        return md + ["The records have no step probes (`probe_every_steps`): re-run the suite.", ""]
    steps, unit = pd.concat(steps), pd.concat(unit)
    acc = steps.pivot_table(index="step", columns="strategy", values="test_accuracy")
    # Step 0 is left out: there the BN net is probed with its moving statistics still at (0, 1), i.e. as the
    # un-normalized net, and the jump to its first trained probe is not drift during training.
    trained = unit[unit.step > 0]
    quantiles = ("u0_p15", "u0_p50", "u0_p85")
    drift = trained.groupby("strategy")[list(quantiles)].agg(lambda v: float(v.max() - v.min()))
    band = {k: (g.u0_p85 - g.u0_p15).to_numpy() for k, g in trained.sort_values("step").groupby("strategy")}
    last_step = int(steps.step.max())
    share, covered = coverage("bn", updates(records))
    both = "batchnorm" in acc and "none" in acc
    ahead = int((acc["batchnorm"] >= acc["none"]).sum()) if both else 0
    final_ahead = both and final.get("batchnorm", np.nan) >= final.get("none", np.nan)
    a_grade = ("inconclusive" if not both or share < MIN_COVERAGE
               else "reproduced" if ahead >= MOST_PROBES * len(acc) and final_ahead
               else "partly reproduced" if ahead >= 0.5 * len(acc) else "not reproduced")
    ratios = {q: _ratio(drift.loc["batchnorm", q], drift.loc["none", q]) for q in quantiles} if both else {}
    smaller = [q for q, r in ratios.items() if r <= DRIFT_MARGIN]
    b_grade = "inconclusive" if not both or share < MIN_COVERAGE else grade_of(len(smaller), len(quantiles))
    widening = "; ".join(f"{k} {w[0]:.1f} -> {w[-1]:.1f}" for k, w in band.items() if len(w))
    claims = [
        ("(a) BN reaches higher test accuracy sooner", a_grade,
         f"BN at least the baseline's accuracy at {ahead} of {len(acc)} probe points; final test accuracy (the "
         f"record's) {final.get('batchnorm', np.nan):.4f} against {final.get('none', np.nan):.4f}; one seed. The runs "
         f"cover {covered}."),
        ("(b, c) the unit's input distribution is stable with BN and drifts without", b_grade,
         "BN's range over training against the baseline's: "
         + ", ".join(f"{q[3:]} {drift.loc['batchnorm', q]:.3g} vs {drift.loc['none', q]:.3g} ({r:.2f}x)"
                     for q, r in ratios.items())
         + f"; the 15th-85th band's width from the first probe to the last: {widening}."),
    ]
    summary = pd.DataFrame({
        "final test accuracy (record)": pd.Series(final),
        f"test accuracy at the last probe (step {last_step})": acc.iloc[-1],
        "test accuracy at first probe after step 0": acc.iloc[1] if len(acc) > 1 else acc.iloc[0],
        **{f"range of the unit's {q[3:]} input (step 0 excluded)": drift[q] for q in quantiles},
    })
    md += [markdown_table(summary.round(4), corner="strategy"), "",
           f"**Verdict: {overall([g for _, g, _ in claims])}**, claim by claim:", ""] + _claims_md(claims)
    md += ["The paper does not state its optimizer; ours is plain SGD with the suite's learning rate, so the speed of "
           "the baseline depends on that choice.", ""] + _differences("bn")
    plt, sns = plots._mpl()
    palette = plots.strategy_palette(steps.strategy.unique())
    fig, axes = plt.subplots(1, 1 + unit.strategy.nunique(), figsize=(14, 3.8), layout="constrained")
    for strategy, g in steps.groupby("strategy"):
        axes[0].plot(g.step, 1 - g.test_accuracy, label=strategy, color=palette[strategy])
    # test error on a log scale: accuracy on a linear one hides a lead of a few tenths of a point near 0.97
    axes[0].set(title="(a) test error", xlabel="training step", ylabel="test error (fraction, log scale)",
                yscale="log")
    axes[0].legend()
    for ax in axes[2:]:
        ax.sharey(axes[1])  # the same input scale in every strategy's panel
    for ax, (strategy, g) in zip(axes[1:], unit.groupby("strategy")):
        ax.fill_between(g.step, g.u0_p15, g.u0_p85, color=palette[strategy], alpha=0.3, label="15th-85th pct")
        ax.plot(g.step, g.u0_p50, color=palette[strategy], label="median")
        ax.set(title=f"sigmoid input, last layer unit 0: {strategy}", xlabel="training step", ylabel="input value")
        ax.legend(fontsize=7)
    path = plots._save(fig, figures / "paper_bn_figure1.png")
    return md + [f"![BN Figure 1 format](figures/{path.name})", ""]


def maxnorm_section(records: list[dict]) -> list[str]:
    md = _header("Dropout and max-norm (Srivastava et al. 2014), MNIST", "paper-maxnorm", records)
    if not records:
        return md
    runs = frames.runs_frame(records)
    md += ["Published test errors for the 784-1024-1024-2048-10 ReLU net: max-norm alone 1.35%, dropout + max-norm "
           "1.05%, after about a million updates. Rule: reproduced when our best configuration of a kind is within "
           "0.2 points of the published error; partly when the ordering (dropout + max-norm better than max-norm alone "
           "better than plain) holds.", ""]
    rows = []
    for r in runs.itertuples():
        kind = "plain" if r.strategy == "none" else "dropout + max-norm" if "dropout_rate" in r.strategy else "max-norm alone"
        err = 100 * (1 - r.test_accuracy) if r.status == "ok" else np.nan
        rows.append({"configuration": r.strategy, "kind": kind, "status": r.status, "epochs": r.epochs,
                     "our test error %": err, "published %": DROPOUT_PAPER.get(kind, np.nan)})
    table = pd.DataFrame(rows).sort_values(["kind", "configuration"])
    md += [markdown_table(table.set_index("configuration").round(3), corner="configuration"), ""]
    best = table.groupby("kind")["our test error %"].min()
    close = [k for k, v in DROPOUT_PAPER.items() if abs(best.get(k, np.inf) - v) <= 0.2]
    ordered = best.get("dropout + max-norm", np.inf) < best.get("max-norm alone", np.inf) < best.get("plain", -np.inf) + 1e-9
    share, covered = coverage("maxnorm", updates(records))
    grade = ("inconclusive" if share < MIN_COVERAGE else "reproduced" if len(close) == len(DROPOUT_PAPER)
             else "partly reproduced" if ordered or close else "not reproduced")
    claims = [("published errors and ordering", grade,
               f"Within 0.2 points of the published error: {', '.join(close) or 'neither kind'}; ordering dropout + "
               f"max-norm < max-norm alone < plain: {'yes' if ordered else 'no'}. The runs cover {covered} (at least "
               f"{MIN_COVERAGE:.0%} needed: errors this far from the end of the paper's schedule say nothing about "
               "where it ends)"
               + ("; constant learning rate and momentum (the paper's schedule is in `paper-maxnorm-full`)."
                  if not any(r["spec"].get("lr_schedule") for r in records) else "."))]
    md += [f"**Verdict: {overall([grade])}**:", ""] + _claims_md(claims)
    return md + _differences("maxnorm")


def make_papers_report(runs_dir, out_dir, log=print) -> Path:
    """Write ``papers.md`` (and its figures) from ``runs_dir/paper-snn``, ``paper-bn``, ``paper-maxnorm``."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    figures = subfolder(out_dir / "figures")  # written in place: a link there is refused, never written through
    md = ["# normbench: paper replications", "",
          "Generated by `normbench report --papers`. Our numbers from the paper suites, beside the published claims, "
          "graded claim by claim (reproduced, partly reproduced, not reproduced, inconclusive) from the records by the "
          "criteria stated in each section; a section's verdict comes from its claims' grades.", ""]
    md += snn_section(_records(runs_dir / "paper-snn"), figures)
    md += bn_section(_records(runs_dir / "paper-bn"), figures)
    md += maxnorm_section(_records(runs_dir / "paper-maxnorm"))
    target = out_dir / "papers.md"
    write_text(target, "\n".join(md))
    log(f"report: {target}")
    return target
