"""Wall time of a whole grid at ``--jobs 1, 2, 4, ...`` on this machine, and a projection for the `full` suite.

For each jobs value the grid runs from scratch (``normbench run --force`` into a fresh
folder, a separate process, as a user would run it); the wall time of the command is
the measurement. From the records it also reports the measurement share (evaluations and
probe over the steady-state epochs) and the aggregate training FLOP rate
(sum over runs of FLOPs per sample x training samples x epochs, over the wall time).

The projection for another suite (default `full`) divides its training FLOPs by the best
aggregate rate measured here. It is a rough estimate, and says so: it assumes the other
suite's models reach the same FLOP rate as this grid's, which holds only for similar
models (small models are dominated by per-step overhead, large ones by arithmetic).

Writes results/perf_grid.csv and the "Grid wall time" section of results/perf.md.

    python benchmarks/grid.py [--suite grid-bench] [--jobs 1,2] [--backend tensorflow] [--engine fit]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTION = "## Grid wall time"


def replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with the section under ``heading`` (up to the next heading of level 1 or 2) replaced by
    ``section``, or ``section`` appended when there is none; every other section is kept."""
    if heading not in text:
        return text.rstrip() + "\n\n" + section
    head, _, rest = text.partition(heading)
    following = re.search(r"\n#{1,2} ", rest)
    return head + section + ("\n" + rest[following.start() + 1:] if following else "")


def suite_train_flops(suite_name: str) -> tuple[float, int]:
    """Training FLOPs of a suite (every run's FLOPs/sample x training samples x epochs) and its run count."""
    import keras

    from normbench.builtins import load_builtins
    from normbench.datasets import DATASET_FACTS
    from normbench.flops import training_flops
    from normbench.runner import build
    from normbench.suites import get_suite

    load_builtins()
    suite = get_suite(suite_name)
    per_sample: dict[tuple, int] = {}
    total = 0.0
    for spec in suite.specs:
        key = (spec.model, spec.dataset, json.dumps(spec.model_params, sort_keys=True))
        if key not in per_sample:
            keras.backend.clear_session()
            facts = DATASET_FACTS[spec.dataset]
            model, _ = build(spec.with_(strategy="none"), facts.shape, facts.classes)
            per_sample[key] = training_flops(model)
        n_total = DATASET_FACTS[spec.dataset].train
        n = min(spec.limit or n_total, n_total - spec.val_size)
        total += per_sample[key] * n * spec.epochs
    return total, len(suite.specs)


def measure(args, jobs: int | str, folder: Path) -> dict:
    cmd = [sys.executable, "-m", "normbench.cli"]
    if args.backend:
        cmd += ["--backend", args.backend]
    cmd += ["run", "--suite", args.suite, "--jobs", str(jobs), "--results", str(folder), "--force"]
    if args.engine:
        cmd += ["--engine", args.engine]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"--jobs {jobs} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    from normbench import record, store

    recs = store.load_records(folder)
    flops = sum(r["performance"]["train_flops_per_sample"] * r["data"]["sizes"]["train"] * r["spec"]["epochs"]
                for r in recs)
    steady = [h for r in recs for h in record.steady(r)]
    train = sum(h["epoch_s"] for h in steady)
    meas = sum(h["eval_s"] + h["probe_s"] for h in steady)
    env = recs[0]["environment"]
    picked = re.search(r"--jobs auto: (\d+)", done.stdout)  # what `auto` chose, as the CLI printed it
    return {"jobs": f"auto ({picked.group(1)})" if picked else jobs, "runs": len(recs), "wall_s": wall,
            "aggregate_gflops_per_s": flops / wall / 1e9,
            "measurement_share": meas / (train + meas) if train + meas else None,
            "engine": record.engine(recs[0]), "backend": env["backend"], "backend_version": env["backend_version"],
            "keras": env["keras"], "device": env["device"], "git_commit": env.get("git_commit")}


def write(rows: list[dict], args, projection: tuple[float, int] | None, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "perf_grid.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    base = rows[0]["wall_s"]
    r0 = rows[0]
    lines = [SECTION, "",
             f"Made by `python benchmarks/grid.py` (`make perf-grid`) on {time.strftime('%Y-%m-%d')}: the `{args.suite}` "
             f"suite ({r0['runs']} runs) from scratch at each `--jobs`, {r0['backend']} {r0['backend_version']}, Keras "
             f"{r0['keras']}, engine {r0['engine']}, device {r0['device']}, commit {str(r0['git_commit'])[:10]}. "
             f"Median of {args.repeats} repeat(s) per jobs value.", "",
             "| jobs | wall s | speedup over 1 job | aggregate training GFLOP/s | measurement share |",
             "|---|---|---|---|---|"]
    for r in rows:
        share = "-" if r["measurement_share"] is None else f"{r['measurement_share']:.1%}"
        lines.append(f"| {r['jobs']} | {r['wall_s']:.1f} | {base / r['wall_s']:.2f}x | {r['aggregate_gflops_per_s']:.1f} | {share} |")
    if projection:
        flops, n = projection
        best = max(rows, key=lambda r: r["aggregate_gflops_per_s"])
        lines += ["", f"Projection for `{args.project}` ({n} runs, {flops / 1e15:.2f} PFLOP of training): "
                  f"{flops / (best['aggregate_gflops_per_s'] * 1e9) / 60:.0f} minutes at the best aggregate rate measured "
                  f"here ({best['aggregate_gflops_per_s']:.1f} GFLOP/s with --jobs {best['jobs']}), training only, on this "
                  f"device. A rough estimate: it assumes `{args.project}`'s models reach the FLOP rate of `{args.suite}`'s."]
    section = "\n".join(lines) + "\n"
    perf = out / "perf.md"
    text = perf.read_text() if perf.exists() else "# normbench throughput\n\n"
    perf.write_text(replace_section(text, SECTION, section))
    print(section)
    print(f"wrote {out / 'perf_grid.csv'} and the grid section of {perf}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="grid-bench", help="suite to time (default grid-bench: 8 small MNIST runs)")
    p.add_argument("--jobs", default=None, help="comma list of numbers or 'auto' (default: 1, 2, 4, ... up to the CPU "
                                                "cores)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--backend", default=None)
    p.add_argument("--engine", default=None)
    p.add_argument("--project", default="full", help="suite whose wall time to project ('' for none)")
    p.add_argument("--data-dir", default=os.environ.get("NORMBENCH_DATA_DIR"))
    p.add_argument("--out", default="results")
    args = p.parse_args()
    if args.jobs:
        jobs = [j if j == "auto" else int(j) for j in args.jobs.split(",")]
    else:
        cores = len(os.sched_getaffinity(0))
        jobs = [j for j in (1, 2, 4, 8, 12, 16) if j <= max(cores, 2)]
    rows = []
    for j in jobs:
        reps = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                reps.append(measure(args, j, Path(tmp)))
        row = dict(reps[0], wall_s=statistics.median(r["wall_s"] for r in reps),
                   aggregate_gflops_per_s=statistics.median(r["aggregate_gflops_per_s"] for r in reps))
        print(f"--jobs {row['jobs']}: {row['wall_s']:.1f} s, {row['aggregate_gflops_per_s']:.1f} GFLOP/s", flush=True)
        rows.append(row)
        write(rows, args, None, Path(args.out))  # what is measured so far survives a run stopped later
    if args.project:
        write(rows, args, suite_train_flops(args.project), Path(args.out))


if __name__ == "__main__":
    main()
