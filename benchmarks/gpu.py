"""One command that measures, on one GPU machine and within a time budget, what normbench has never measured there.

Sections, in this order (each one or more commands of the existing benchmarks and CLI, run as subprocesses):

- ``env``: the environment a record would name (backend, device, commit), and ``nvidia-smi`` where there is one;
- ``throughput-mlp8``, ``throughput-mlp32``: ``benchmarks/throughput.py`` rows against plain Keras, on JAX with
  both engines (``fit`` and ``scan``), one invocation per model so a cut keeps the models already measured;
- ``seeds-together``: ten seeds as one program (``normbench run --seeds-together``) against ten separate runs,
  when ``normbench run --help`` shows that flag; else recorded as not available at this commit;
- ``jobs-grid``: ``benchmarks/grid.py`` on the ``grid-bench`` suite at ``--jobs 1,4,8,auto``;
- ``throughput-convnet``: the conv-net rows, when CIFAR-10 is in the data folder;
- ``full``: ``normbench run --suite full --jobs auto`` for the rest of the budget (its MNIST part when CIFAR-10 is
  not in the data folder), cut at the deadline; the records it finished are kept.

A section starts only when the budget has its minimum left, and runs at most until its cap or the deadline,
whichever comes first; after every section the summary (``summary.md``, ``summary.json``: the plan with its sizes
and deadlines, each section's status and wall time, the targets met or not) is written again, so a run stopped at
any point leaves what it had. Everything goes under one folder named after the device, ``OUT/gpu-<device>``
(``OUT/tiny-<device>`` in tiny mode); ``--bundle DIR`` also writes it as one ``.tar.gz`` plus the summary into
DIR (a device machine returns at most 8 files).

``--tiny``: the same sections at sizes of seconds (a few hundred samples, the fewest epochs each benchmark takes,
mlp8 only, ``--jobs 1,2`` on a two-run suite, the MNIST part of ``full`` cut after 60 s) on whatever device and
backend this machine has; it exits non-zero if a section fails or does not run to its end (CI runs it, so the
script never rots).

    python benchmarks/gpu.py --out runs/gpu [--tiny] [--budget 540] [--data-dir DIR] [--bundle DIR]
    python benchmarks/gpu.py --publish runs/gpu/gpu-nvidia-h200 --perf results/perf.md
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MADE_BY = "benchmarks/gpu.py"
BUDGET_S = 540  # a device machine runs one command for at most 10 minutes: 9 for the sections, 1 for the wheels'
# install, the start of Python and the bundle (the 12 minutes do not fit in one command there)
MARGIN_S = 15  # kept back from the last section for the summary and the bundle
TINY_FULL_S = 60  # tiny mode's cut of `full`: a few runs finish, and the cut itself is exercised

# the GPU targets
FULL_TARGET_S = 300  # `full` in <= 5 minutes with --jobs auto
CPU_FACTOR = 10.0  # mlp32 >= 10x this project's CPU (results/perf.md)
PLAIN_FACTOR = 1.0  # >= 1.0x plain Keras on every row
SEEDS_FACTOR = 5.0  # 10 seeds as one program >= 5x ten separate runs

# sizes: the real (GPU) plan and the tiny (CPU, CI) one
SIZES = {
    "real": {"mnist_samples": 55000, "cifar_samples": 20000, "repeats": 2, "epochs": 4, "seeds": 10,
             "seed_epochs": 3, "seed_limit": None, "jobs": "1,4,8,auto", "grid_suite": "grid-bench",
             "mlp_strategies": {"mlp8": "none", "mlp32": "none,batchnorm"}, "conv_strategies": "none,batchnorm"},
    "tiny": {"mnist_samples": 300, "cifar_samples": 300, "repeats": 1, "epochs": 4, "seeds": 2,
             "seed_epochs": 1, "seed_limit": 300, "jobs": "1,2", "grid_suite": None,
             "mlp_strategies": {"mlp8": "none"}, "conv_strategies": "none"},
}
TINY_GRID = """description = "benchmarks/gpu.py --tiny: two runs of seconds to time --jobs 1 and 2"

[defaults]
epochs = 1
batch_size = 64
limit = 300
eval_limit = 300
val_size = 300
probe_size = 32
train_eval_size = 300

[[grid]]
datasets = ["mnist"]
models = ["mlp8"]
strategies = ["none", "batchnorm"]
seeds = [0]
"""
STATUS_OK = "ok"
STATUS_CUT = "cut at the deadline"  # expected for `full`: it runs until the budget is spent
STATUS_UNAVAILABLE = "not available at this commit"


@dataclasses.dataclass
class Section:
    """A named step of the plan: its commands, how long it may run, and why it is skipped (None: it runs)."""

    name: str
    what: str
    sizes: str
    steps: list[tuple[str, list[str]]]  # (label, argv), run one after another in the section's folder
    cap_s: float | None  # the most it may run (None: until the deadline)
    min_s: float  # not started with less than this left
    skip: str | None = None
    cut_ok: bool = False  # a cut at the deadline is its expected end (`full`)
    files: dict[Path, str] = dataclasses.field(default_factory=dict)  # written before it runs (suite files)


# ----------------------------------------------------------------------------- pure helpers (tested without training)


def device_slug(device: str) -> str:
    """A folder name for a record's device: 'GPU: NVIDIA H200' -> 'nvidia-h200',
    'CPU: Intel(R) Xeon(R) Processor (2 cores)' -> 'cpu-intel-xeon-processor-2-cores'."""
    text = re.sub(r"\((r|tm)\)", "", device.lower())
    if text.startswith("gpu:"):
        text = text[4:]
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def mnist_part(suite_toml: str) -> str:
    """A suite file's text with only its MNIST grids: `full` without CIFAR-10, for a machine that lacks it."""
    head, *grids = suite_toml.split("\n[[grid]]")
    kept = [g for g in grids if tomllib.loads("[[grid]]" + g)["grid"][0]["datasets"] == ["mnist"]]
    if not kept:
        raise ValueError("the suite has no MNIST-only grid")
    head = re.sub(r'^description = ".*"$', 'description = "its MNIST grids only (CIFAR-10 was not in the data folder)"',
                  head, count=1, flags=re.M)
    return head + "".join("\n[[grid]]" + g for g in kept)


def cpu_reference(perf_md: str) -> dict[tuple[str, str], float]:
    """The best normbench samples/s per (model, strategy) over the CPU tables of a results/perf.md."""
    best: dict[tuple[str, str], float] = {}
    cpu = False
    for line in perf_md.splitlines():
        if line.startswith("Keras ") and ", device " in line:  # a throughput table's environment line
            cpu = ", device CPU" in line
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cpu and len(cells) > 4 and cells[0] in ("fit", "scan"):
            key, value = (cells[1], cells[2]), float(cells[3].replace(",", ""))
            best[key] = max(best.get(key, 0.0), value)
    return best


# a row as benchmarks/throughput.py prints it when measured (its files are written only at its end)
PRINTED_ROW = re.compile(r"^\s+(?P<engine>\w+)\s+(?P<model>\S+)\s+(?P<strategy>\S+)\s+"
                         r"normbench\s+(?P<normbench>[\d,]+)/s\s+plain\s+(?P<plain>[\d,]+)/s\s+"
                         r"speedup (?P<speedup>[\d.]+)x \[(?P<low>[\d.]+)-(?P<high>[\d.]+)\]\s+"
                         r"training (?P<train>[\d.]+)x", re.M)


def throughput_rows(folder: Path) -> list[dict]:
    """A throughput section's rows: from its perf.csv, else (the benchmark was stopped before it wrote it) from the
    rows its log printed, without the columns the log lacks."""
    numbers = ("normbench_samples_per_s", "plain_samples_per_s", "speedup", "speedup_min", "speedup_max",
               "train_speedup")
    rows = read_csv(folder / "perf.csv")
    if rows:
        return [{k: r[k] for k in ("engine", "model", "strategy")} | {"train_samples": int(r["train_samples"])}
                | {k: float(r[k]) for k in numbers} | {"source": "perf.csv"} for r in rows]
    log = folder / "log.txt"
    return [{k: m[k] for k in ("engine", "model", "strategy")} | {"train_samples": None}
            | dict(zip(numbers, (float(m[g].replace(",", "")) for g in ("normbench", "plain", "speedup", "low", "high",
                                                                          "train"))))
            | {"source": "log"} for m in PRINTED_ROW.finditer(log.read_text() if log.is_file() else "")]


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plan(mode: str, *, cli: list[str], python: str, backend: str, data_dir: str, datasets: set[str],
         seeds_flag: bool, folder: Path) -> list[Section]:
    """The sections, in order, with their commands and time limits for ``mode`` ('real' or 'tiny')."""
    z = SIZES[mode]
    tiny = mode == "tiny"
    bench = REPO / "benchmarks"

    def throughput(model: str, strategies: str) -> list[str]:
        return [python, str(bench / "throughput.py"), "--backends", backend, "--models", model, "--models-for",
                f"{backend}={model}", "--strategies", strategies, "--repeats", str(z["repeats"]), "--epochs",
                str(z["epochs"]), "--mnist-samples", str(z["mnist_samples"]), "--cifar-samples",
                str(z["cifar_samples"]), "--bf16", "", "--data-dir", data_dir,
                "--out", str(folder / f"throughput-{model}")]

    engines = 2 if backend == "jax" else 1
    engine_words = "engines fit and scan (JAX)" if backend == "jax" else f"engine fit ({backend})"
    sections = [Section("env", "the environment a record names, and nvidia-smi", "-",
                        [("env", [python, __file__, "--describe"])], 60, 5)]
    for model, cap in (("mlp8", 80), ("mlp32", 150)):
        strategies = z["mlp_strategies"].get(model)
        sections.append(Section(
            f"throughput-{model}", f"{model} against plain Keras, {engine_words}",
            f"{strategies} x {engines} engine(s), {z['repeats']} repeat(s) of {z['epochs']} epochs on "
            f"{z['mnist_samples']:,} MNIST images" if strategies else "-",
            [("throughput", throughput(model, strategies))] if strategies else [], cap, 30,
            None if strategies else "tiny mode measures mlp8 only"))
        if tiny:
            sections[-1].cap_s = 150
    seeds = ",".join(str(s) for s in range(z["seeds"]))
    seed_run = [*cli, "run", "--models", "mlp8", "--strategies", "none", "--seeds", seeds, "--epochs",
                str(z["seed_epochs"]), "--force"] + (["--limit", str(z["seed_limit"])] if z["seed_limit"] else [])
    sections.append(Section(
        "seeds-together", f"{z['seeds']} seeds of mlp8 as one program against {z['seeds']} separate runs (JAX)",
        f"mlp8/none, {z['seed_epochs']} epoch(s), {z['seed_limit'] or 'all 55,000'} MNIST images",
        [("separate", seed_run + ["--results", str(folder / "seeds-together" / "separate")]),
         ("together", seed_run + ["--seeds-together", "--results", str(folder / "seeds-together" / "together")])],
        120, 45,
        None if seeds_flag and backend == "jax" else
        STATUS_UNAVAILABLE if not seeds_flag else "needs the JAX backend"))
    grid_suite = str(folder / "jobs-grid" / "gpu-tiny.toml") if tiny else z["grid_suite"]
    sections.append(Section(
        "jobs-grid", "a suite's wall time at each --jobs (benchmarks/grid.py)" + ("" if tiny else ", and its "
                                                                                  "projection for `full`"),
        f"suite {'gpu-tiny (2 runs)' if tiny else 'grid-bench (8 runs)'} at --jobs {z['jobs']}",
        [("grid", [python, str(bench / "grid.py"), "--suite", grid_suite, "--jobs", z["jobs"], "--backend", backend,
                   "--data-dir", data_dir, "--out", str(folder / "jobs-grid")] + (["--project", ""] if tiny else []))],
        180 if not tiny else 150, 60,
        files={Path(grid_suite): TINY_GRID} if tiny else {}))
    conv = z["conv_strategies"]
    sections.append(Section(
        "throughput-convnet", f"the convnet against plain Keras, {engine_words}",
        f"{conv} x {engines} engine(s), {z['repeats']} repeat(s) of {z['epochs']} epochs on "
        f"{z['cifar_samples']:,} CIFAR-10 images", [("throughput", throughput("convnet", conv))], 120, 60,
        "tiny mode measures mlp8 only" if tiny else None if "cifar10" in datasets else
        "CIFAR-10 is not in the data folder (it does not fit beside the tree in one call's 64 MiB carry)"))
    whole = "cifar10" in datasets and not tiny
    full_suite = "full" if whole else str(folder / "full" / "full-mnist.toml")
    full_cmd = [*cli, "run", "--suite", full_suite, "--jobs", "auto", "--results", str(folder / "full" / "records")]
    if tiny:
        full_cmd += ["--limit", "200", "--epochs", "1"]
    sections.append(Section(
        "full", "the `full` suite with --jobs auto for the rest of the budget",
        ("all 90 runs" if full_suite == "full" else "its 45 MNIST runs") + (", 200 images, 1 epoch" if tiny else ""),
        [("full", full_cmd)], TINY_FULL_S if tiny else None, 60 if not tiny else 20, cut_ok=True,
        files={} if whole else {Path(full_suite): mnist_part((REPO / "benchmarks/suites/full.toml").read_text())}))
    return sections


# ----------------------------------------------------------------------------- running


def run_step(argv: list[str], log: Path, timeout: float, env: dict) -> tuple[int | None, float]:
    """Run one command into ``log``; (exit code, or None when it was stopped at ``timeout``; wall seconds)."""
    t = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the whole group: a grid's worker processes too
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = None
    return rc, time.perf_counter() - t


def run_section(section: Section, folder: Path, deadline: float, env: dict) -> dict:
    """Run a section's steps (or say why not); its status, wall seconds and each step's."""
    if section.skip:
        return {"status": section.skip if section.skip == STATUS_UNAVAILABLE else f"skipped: {section.skip}",
                "wall_s": 0.0, "steps": {}}
    left = deadline - time.monotonic() - MARGIN_S
    if left < section.min_s:
        return {"status": f"not started: {max(left, 0):.0f} s left, it needs {section.min_s:.0f}", "wall_s": 0.0,
                "steps": {}}
    sub = folder / section.name
    sub.mkdir(parents=True, exist_ok=True)
    for path, text in section.files.items():
        path.write_text(text)
    until = time.monotonic() + (min(section.cap_s, left) if section.cap_s else left)
    steps, status, total = {}, STATUS_OK, 0.0
    for label, argv in section.steps:
        rc, wall = run_step(argv, sub / "log.txt", until - time.monotonic(), env)
        steps[label] = {"exit": rc, "wall_s": round(wall, 2)}
        total += wall
        if rc is None:
            status = STATUS_CUT if section.cut_ok else f"cut at its limit in step {label}"
            break
        if rc != 0:
            status = f"failed: step {label} exited {rc}"
            break
    return {"status": status, "wall_s": round(total, 2), "steps": steps, "started_at_s": None}


def seeds_flag_available(cli: list[str], env: dict) -> bool:
    done = subprocess.run([*cli, "run", "--help"], capture_output=True, text=True, cwd=REPO, env=env)
    return "--seeds-together" in done.stdout


def available_datasets(data_dir: str) -> set[str]:
    folder = Path(data_dir)
    found = {"mnist"} if (folder / "mnist.npz").is_file() else set()
    if any((folder / n).exists() for n in ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10_jpeg.npz")):
        found.add("cifar10")
    return found


def describe() -> None:
    """The ``env`` section's step: what a record would say about this process's backend and device."""
    from normbench.env import environment

    env = environment()
    print(json.dumps(env, indent=1))
    smi = shutil.which("nvidia-smi")
    if smi:
        print(subprocess.run([smi], capture_output=True, text=True).stdout)


# ----------------------------------------------------------------------------- what the sections measured


def collect(folder: Path, results: dict) -> dict:
    """Each section's figures, read from the files its commands wrote."""
    figures: dict = {}
    rows = [r for m in ("mlp8", "mlp32", "convnet") for r in throughput_rows(folder / f"throughput-{m}")]
    if rows:
        figures["throughput"] = rows
    grid = read_csv(folder / "jobs-grid" / "perf_grid.csv")
    if grid:
        figures["jobs_grid"] = [{"jobs": r["jobs"], "runs": int(r["runs"]), "wall_s": float(r["wall_s"]),
                                 "aggregate_gflops_per_s": float(r["aggregate_gflops_per_s"])} for r in grid]
        perf = folder / "jobs-grid" / "perf.md"
        projection = re.search(r"^Projection for .*$", perf.read_text(), re.M) if perf.is_file() else None
        if projection:
            figures["jobs_grid_projection"] = projection.group(0)
    seeds = results.get("seeds-together", {}).get("steps", {})
    if all(seeds.get(s, {}).get("exit") == 0 for s in ("separate", "together")):
        figures["seeds"] = {"separate_s": seeds["separate"]["wall_s"], "together_s": seeds["together"]["wall_s"],
                            "ratio": seeds["separate"]["wall_s"] / seeds["together"]["wall_s"]}
    full = results.get("full", {})
    if full.get("steps"):
        from normbench.store import load_records

        records = load_records(folder / "full" / "records") if (folder / "full" / "records").is_dir() else []
        log = (folder / "full" / "log.txt").read_text() if (folder / "full" / "log.txt").is_file() else ""
        total = re.search(r"\[\d+/(\d+)", log)
        figures["full"] = {"runs_done": len(records), "ok": sum(r["status"] == "ok" for r in records),
                           "runs_total": int(total.group(1)) if total else None, "wall_s": full["wall_s"],
                           "finished": full["status"] == STATUS_OK}
    return figures


def targets(figures: dict, results: dict, cpu_ref: dict, meta: dict) -> list[tuple[str, str, str]]:
    """(target, 'met' / 'not met' / 'unmeasured', detail) for each of the issue's GPU targets."""
    out = []
    on_gpu = meta.get("device_kind") == "gpu"
    where = "" if on_gpu else " (not a GPU: tiny or CPU run, verdicts only exercise the code)"
    full = figures.get("full")
    name = f"`full` in <= {FULL_TARGET_S // 60} minutes with --jobs auto{where}"
    if not full:
        out.append((name, "unmeasured", results.get("full", {}).get("status", "not run")))
    elif full["finished"] and meta.get("full_suite") == "full":
        out.append((name, "met" if full["wall_s"] <= FULL_TARGET_S else "not met", f"{full['wall_s']:.0f} s"))
    else:
        n, total = full["runs_done"], full["runs_total"]
        guess = (f"; at that pace the {total} runs would take about {full['wall_s'] * total / n / 60:.0f} min "
                 "(a run-count extrapolation)" if n and total else "")
        verdict = "not met" if full["wall_s"] > FULL_TARGET_S and meta.get("full_suite") == "full" else "unmeasured"
        out.append((name, verdict, f"{n} of {total or '?'} runs of {meta.get('full_suite')} in {full['wall_s']:.0f} s, "
                                   f"then cut{guess}"))
    rows = figures.get("throughput", [])
    mlp32 = {}
    for r in rows:
        if r["model"] == "mlp32":
            mlp32[r["strategy"]] = max(mlp32.get(r["strategy"], 0.0), r["normbench_samples_per_s"])
    name = f"mlp32 >= {CPU_FACTOR:g}x this project's CPU (results/perf.md){where}"
    pairs = {s: v / cpu_ref[("mlp32", s)] for s, v in mlp32.items() if cpu_ref.get(("mlp32", s))}
    if not pairs:
        out.append((name, "unmeasured", "no mlp32 row (or no CPU reference for its strategies)"))
    else:
        out.append((name, "met" if min(pairs.values()) >= CPU_FACTOR else "not met",
                    ", ".join(f"{s} {mlp32[s]:,.0f}/s = {x:.1f}x {cpu_ref[('mlp32', s)]:,.0f}/s"
                              for s, x in pairs.items())))
    name = f">= {PLAIN_FACTOR:g}x plain Keras on every row{where}"
    if not rows:
        out.append((name, "unmeasured", "no throughput row"))
    else:
        low = [f"{r['engine']} {r['model']}/{r['strategy']} {r['speedup']:.2f}x" for r in rows
               if r["speedup"] < PLAIN_FACTOR]
        out.append((name, "not met" if low else "met",
                    f"below on {len(low)} of {len(rows)}: {', '.join(low)}" if low else
                    f"{len(rows)} rows, lowest {min(r['speedup'] for r in rows):.2f}x"))
    seeds = figures.get("seeds")
    n = meta.get("seeds", 10)
    name = f"{n} seeds as one program >= {SEEDS_FACTOR:g}x {n} separate runs{where}"
    if not seeds:
        out.append((name, "unmeasured", results.get("seeds-together", {}).get("status", "not run")))
    else:
        out.append((name, "met" if seeds["ratio"] >= SEEDS_FACTOR else "not met",
                    f"{seeds['separate_s']:.1f} s separate, {seeds['together_s']:.1f} s together: "
                    f"{seeds['ratio']:.2f}x"))
    return out


def summary_markdown(summary: dict) -> str:
    m = summary["meta"]
    lines = [f"# GPU measurements: {summary['label']}", "",
             f"Made by `python {MADE_BY}{' --tiny' if m['mode'] == 'tiny' else ''}` on {m['date']} UTC: device "
             f"{m.get('device', '?')}, {m['backend']} {m.get('backend_version', '?')}, Keras {m.get('keras', '?')}, "
             f"commit {str(m.get('git_commit'))[:10]}{' (uncommitted changes)' if m.get('git_dirty') else ''}. "
             f"Budget {m['budget_s']:.0f} s for the sections; {summary['elapsed_s']:.0f} s used"
             f"{'' if summary['complete'] else ' so far (in progress or stopped)'}. Data: {', '.join(m['datasets'])}.",
             "", *plan_markdown(summary["plan"], m["budget_s"]), "", "### Sections", "",
             "| section | status | started at | wall s |", "|---|---|---|---|"]
    for name, r in summary["results"].items():
        start = "-" if r.get("started_at_s") is None else f"+{r['started_at_s']:.0f} s"
        lines.append(f"| {name} | {r['status']} | {start} | {r['wall_s']:.1f} |")
    lines += ["", "### Targets", ""]
    lines += [f"- {name}: **{verdict}** ({detail})" for name, verdict, detail in summary["targets"]]
    f = summary["figures"]
    if f.get("throughput"):
        lines += ["", "### Throughput against plain Keras", "",
                  "| engine | model | strategy | train samples | normbench samples/s | plain samples/s | "
                  "speedup [min-max] "
                  "| training speedup |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['engine']}{'*' if r['source'] == 'log' else ''} | {r['model']} | {r['strategy']} | "
                  f"{'-' if r['train_samples'] is None else format(r['train_samples'], ',')} | "
                  f"{r['normbench_samples_per_s']:,.0f} | {r['plain_samples_per_s']:,.0f} | {r['speedup']:.2f}x "
                  f"[{r['speedup_min']:.2f}-{r['speedup_max']:.2f}] | {r['train_speedup']:.2f}x |"
                  for r in f["throughput"]]
        if any(r["source"] == "log" for r in f["throughput"]):
            lines += ["", "\\* read from the benchmark's log: it was stopped before it wrote its files."]
    if f.get("jobs_grid"):
        lines += ["", "### A suite at each --jobs", "", "| jobs | runs | wall s | aggregate training GFLOP/s |",
                  "|---|---|---|---|"]
        lines += [f"| {r['jobs']} | {r['runs']} | {r['wall_s']:.1f} | {r['aggregate_gflops_per_s']:.1f} |"
                  for r in f["jobs_grid"]]
        if f.get("jobs_grid_projection"):
            lines += ["", f["jobs_grid_projection"]]
    if f.get("full"):
        u = f["full"]
        lines += ["", "### full", "", f"{u['runs_done']} runs recorded ({u['ok']} ok) of {u['runs_total'] or '?'} in "
                  f"{u['wall_s']:.0f} s, {'finished' if u['finished'] else 'cut at the deadline'}; their timings were "
                  "measured with other runs sharing the device."]
    lines += ["", "Each section's folder holds its command's log (`log.txt`) and what the benchmark wrote "
              "(`perf.md`/`perf.csv`, `perf_grid.csv`, records).", ""]
    return "\n".join(lines)


def plan_entry(section: Section) -> dict:
    return {k: getattr(section, k) for k in ("name", "what", "sizes", "cap_s", "min_s", "skip")}


def plan_markdown(sections: list[dict], budget: float) -> list[str]:
    """The plan as a table: each section's sizes, the latest time it may start, and how long it may run."""
    lines = ["### Plan", "", f"Sections in this order within a budget of {budget:.0f} s (the last {MARGIN_S} s kept "
             "for the summary); a section starts only before its latest start, and is stopped at its cap or at the "
             "deadline.", "", "| section | what | sizes | latest start | runs at most |", "|---|---|---|---|---|"]
    for p in sections:
        if p["skip"]:
            when = cap = "-"
            p = {**p, "sizes": f"{p['sizes']}; skipped: {p['skip']}" if p["sizes"] != "-" else f"skipped: {p['skip']}"}
        else:
            when = f"+{budget - MARGIN_S - p['min_s']:.0f} s"
            cap = "until the deadline" if p["cap_s"] is None else f"{p['cap_s']:.0f} s"
        lines.append(f"| {p['name']} | {p['what']} | {p['sizes']} | {when} | {cap} |")
    return lines


def write_summary(folder: Path, summary: dict) -> None:
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (folder / "summary.md").write_text(summary_markdown(summary))


def layout_problems(folder: Path) -> list[str]:
    """What is wrong with an output folder: the summary's parts, and a folder with a log for each section that ran."""
    problems = []
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError) as e:
        return [f"no readable summary.json ({e})"]
    if summary.get("made_by") != MADE_BY:
        problems.append("summary.json was not written by benchmarks/gpu.py")
    for key in ("label", "meta", "plan", "results", "targets", "figures", "complete"):
        if key not in summary:
            problems.append(f"summary.json has no {key!r}")
    if problems:
        return problems
    if folder.name != summary["label"]:
        problems.append(f"the folder is {folder.name}, the summary's label {summary['label']}")
    if [p["name"] for p in summary["plan"]] != list(summary["results"]):
        problems.append("the sections run are not the plan's, in its order")
    for name, r in summary["results"].items():
        if r["steps"] and not (folder / name / "log.txt").is_file():
            problems.append(f"section {name} ran but has no {name}/log.txt")
    if not (folder / "summary.md").is_file():
        problems.append("no summary.md")
    return problems


def crashed(summary: dict, strict: bool) -> list[str]:
    """Sections that failed; with ``strict`` (tiny mode) also those cut or not started."""
    bad = []
    for name, r in summary["results"].items():
        s = r["status"]
        if s.startswith("failed") or (strict and (s.startswith(("cut at its", "not started")))):
            bad.append(f"{name}: {s}")
    return bad


# ----------------------------------------------------------------------------- driver


def publish(folder: Path, perf: Path) -> None:
    """Put a finished run's summary into results/perf.md as its own top-level section (replaced if there)."""
    spec = importlib.util.spec_from_file_location("grid_bench", REPO / "benchmarks" / "grid.py")
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    section = (folder / "summary.md").read_text()
    heading = section.splitlines()[0]
    text = perf.read_text() if perf.exists() else ""
    perf.write_text(grid.replace_section(text, heading, section))
    print(f"wrote the section {heading!r} of {perf}")


def bundle(folder: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest / f"{folder.name}.tar.gz", "w:gz") as t:
        t.add(folder, arcname=folder.name)
    for name in ("summary.md", "summary.json"):
        shutil.copy(folder / name, dest / f"{folder.name}-{name}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gpu", help="the folder gpu-<device> (tiny-<device>) is made in")
    p.add_argument("--tiny", action="store_true", help="sizes of seconds, for a CPU and CI")
    p.add_argument("--budget", type=float, default=None, help=f"seconds for all sections (default {BUDGET_S}; "
                                                              "tiny: 600)")
    p.add_argument("--backend", default=None, help="default: jax when installed (a GPU machine's), else tensorflow")
    p.add_argument("--data-dir", default=os.environ.get("NORMBENCH_DATA_DIR"))
    p.add_argument("--only", default=None, help="comma list of sections to run (the others are skipped)")
    p.add_argument("--bundle", default=None, help="also write the folder as DIR/<label>.tar.gz and its summary")
    p.add_argument("--plan", action="store_true", help="print the plan for this data folder and exit (runs nothing)")
    p.add_argument("--publish", default=None, metavar="FOLDER", help="put FOLDER's summary into --perf and exit")
    p.add_argument("--perf", default="results/perf.md")
    p.add_argument("--describe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.describe:
        describe()
        return 0
    if args.publish:
        publish(Path(args.publish), Path(args.perf))
        return 0
    if not args.data_dir:
        p.error("give --data-dir or set NORMBENCH_DATA_DIR (a folder with mnist.npz; cifar10_jpeg.npz optional)")
    start = time.monotonic()
    mode = "tiny" if args.tiny else "real"
    budget = args.budget or (600 if args.tiny else BUDGET_S)
    backend = args.backend or ("jax" if importlib.util.find_spec("jax") else "tensorflow")
    data_dir = str(Path(args.data_dir).resolve())
    datasets = available_datasets(data_dir)
    env = {**os.environ, "KERAS_BACKEND": backend, "NORMBENCH_DATA_DIR": data_dir, "PYTHONUNBUFFERED": "1",
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # several processes share the GPU (grid workers, `full`)
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    python = sys.executable
    cli = [python, "-m", "normbench.cli", "--backend", backend]
    make_plan = lambda folder: plan(mode, cli=cli, python=python, backend=backend, data_dir=data_dir,  # noqa: E731
                                    datasets=datasets, seeds_flag=seeds_flag_available(cli, env), folder=folder)
    if args.plan:
        sections = make_plan(Path(args.out) / f"{'tiny' if args.tiny else 'gpu'}-DEVICE")
        print("\n".join(plan_markdown([plan_entry(s) for s in sections], budget)))
        return 0
    described = subprocess.run([python, __file__, "--describe"], capture_output=True, text=True, cwd=REPO, env=env)
    try:
        machine = json.loads(described.stdout[:described.stdout.index("\n}") + 2])
    except ValueError:
        print(described.stdout[-2000:], described.stderr[-2000:], file=sys.stderr)
        return 2
    label = f"{'tiny' if args.tiny else 'gpu'}-{device_slug(machine['device'])}"
    folder = Path(args.out).resolve() / label
    sections = make_plan(folder)
    if args.only:
        keep = set(args.only.split(","))
        unknown = keep - {s.name for s in sections}
        if unknown:
            p.error(f"--only: no section {', '.join(sorted(unknown))}")
        for s in sections:
            if s.name not in keep and not s.skip:
                s.skip = "not in --only"
    meta = {**{k: machine.get(k) for k in ("device", "device_kind", "backend_version", "keras", "git_commit",
                                           "git_dirty", "python")},
            "mode": mode, "backend": backend, "budget_s": budget,
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "datasets": sorted(datasets), "seeds": SIZES[mode]["seeds"],
            "full_suite": "full" if "cifar10" in datasets and not args.tiny else
                          "full, MNIST part" + (" (tiny sizes)" if args.tiny else "")}
    perf = REPO / "results" / "perf.md"
    cpu_ref = cpu_reference(perf.read_text()) if perf.is_file() else {}
    summary = {"made_by": MADE_BY, "label": label, "meta": meta, "complete": False, "elapsed_s": 0.0,
               "plan": [plan_entry(s) for s in sections], "results": {}, "targets": [], "figures": {},
               "cpu_reference": {f"{m}/{s}": v for (m, s), v in cpu_ref.items()}}
    if folder.exists():
        old = folder / "summary.json"
        if not old.is_file() or json.loads(old.read_text()).get("made_by") != MADE_BY:
            p.error(f"{folder} exists and is not an earlier output of this script: move it away")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_summary(folder, summary)  # from the start, the folder says what it is and what is planned
    print(f"{label}: {len(sections)} sections, budget {budget:.0f} s, data {', '.join(sorted(datasets))}; "
          f"writing {folder}", flush=True)
    deadline = start + budget
    for section in sections:
        at = time.monotonic() - start
        print(f"== {section.name} (+{at:.0f} s): {section.what}", flush=True)
        result = run_section(section, folder, deadline, env)
        result["started_at_s"] = round(at, 1) if result["steps"] else None
        summary["results"][section.name] = result
        summary["figures"] = collect(folder, summary["results"])
        summary["targets"] = targets(summary["figures"], summary["results"], cpu_ref, meta)
        summary["elapsed_s"] = time.monotonic() - start
        write_summary(folder, summary)
        print(f"   {result['status']} ({result['wall_s']:.0f} s)", flush=True)
    summary["complete"] = True
    write_summary(folder, summary)
    for name, verdict, detail in summary["targets"]:
        print(f"target: {name}: {verdict} ({detail})")
    if args.bundle:
        bundle(folder, Path(args.bundle))
    problems = layout_problems(folder) + crashed(summary, strict=args.tiny)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"wrote {folder} in {time.monotonic() - start:.0f} s", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
