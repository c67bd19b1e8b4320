"""benchmarks/gpu.py without training: its plan, its time limits, the figures and verdicts it reads from the
benchmarks' files, and the folder layout it writes (CI runs the script itself in tiny mode, .ci/run)."""

import csv
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
_spec = importlib.util.spec_from_file_location("gpu_bench", _PATH)
gpu = importlib.util.module_from_spec(_spec)
sys.modules["gpu_bench"] = gpu  # its dataclass looks its module up there
_spec.loader.exec_module(gpu)


def _plan(tmp_path, mode="real", datasets=("mnist", "cifar10"), seeds_flag=True, backend="jax"):
    return gpu.plan(mode, cli=["normbench", "--backend", backend], python="python3", backend=backend,
                    data_dir="/data", datasets=set(datasets), seeds_flag=seeds_flag, folder=tmp_path)


def test_the_folder_is_named_after_the_device():
    assert gpu.device_slug("GPU: NVIDIA H200") == "nvidia-h200"
    assert gpu.device_slug("CPU: Intel(R) Xeon(R) Processor (2 cores)") == "cpu-intel-xeon-processor-2-cores"


def test_the_mnist_part_of_full_is_its_mnist_runs_unchanged(tmp_path):
    from normbench.suites import get_suite

    full = get_suite("full")
    path = tmp_path / "full-mnist.toml"
    path.write_text(gpu.mnist_part((gpu.REPO / "benchmarks" / "suites" / "full.toml").read_text()))
    part = get_suite(str(path))
    assert [s.run_id for s in part.specs] == [s.run_id for s in full.specs if s.dataset == "mnist"]
    assert len(part.specs) == 45


def test_the_cpu_reference_is_the_best_cpu_row_and_ignores_gpu_tables():
    perf = "\n".join([
        "## jax 0.10.2", "", "Keras 3.15.1, device CPU: Intel(R) Xeon(R) Processor (2 cores), normbench's ...", "",
        "| engine | model | strategy | normbench samples/s | plain samples/s |", "|---|---|---|---|---|",
        "| fit | mlp32 | none | 4,117 | 4,561 |", "| scan | mlp32 | none | 6,435 | 4,531 |",
        "## jax 0.11.2", "", "Keras 3.15.1, device GPU: NVIDIA H200, normbench's ...", "",
        "| engine | model | strategy | normbench samples/s | plain samples/s |", "|---|---|---|---|---|",
        "| scan | mlp32 | none | 90,000 | 50,000 |", "| fit | mlp32 | batchnorm | 80,000 | 50,000 |"])
    assert gpu.cpu_reference(perf) == {("mlp32", "none"): 6435.0}
    committed = gpu.cpu_reference((gpu.REPO / "results" / "perf.md").read_text())
    assert {("mlp32", "none"), ("mlp32", "batchnorm")} <= set(committed)  # what the mlp32 target divides by


def test_the_real_plan_measures_every_item_on_jax_and_ends_with_full(tmp_path):
    sections = _plan(tmp_path)
    names = [s.name for s in sections]
    assert names == ["env", "throughput-mlp8", "throughput-mlp32", "seeds-together", "jobs-grid",
                     "throughput-convnet", "full"]
    assert not any(s.skip for s in sections)
    steps = {s.name: s.steps for s in sections}
    assert [label for label, _ in steps["seeds-together"]] == ["separate", "together"]
    separate, together = (argv for _, argv in steps["seeds-together"])
    assert "--seeds-together" in together and "--seeds-together" not in separate
    assert separate[separate.index("--seeds") + 1] == ",".join(map(str, range(10)))
    grid = steps["jobs-grid"][0][1]
    assert grid[grid.index("--jobs") + 1] == "1,4,8,auto"
    for name in ("throughput-mlp8", "throughput-mlp32", "throughput-convnet"):
        argv = steps[name][0][1]
        assert argv[argv.index("--backends") + 1] == "jax" and argv[argv.index("--bf16") + 1] == ""
    full = sections[-1]
    argv = full.steps[0][1]
    assert argv[argv.index("--suite") + 1] == "full" and argv[argv.index("--jobs") + 1] == "auto"
    assert full.cap_s is None and full.cut_ok  # it takes the rest of the budget
    for s in sections[:-1]:  # every other section can start with the whole budget left and stops in time
        assert s.min_s <= s.cap_s <= gpu.BUDGET_S - gpu.MARGIN_S


def test_without_cifar_or_the_seeds_flag_the_plan_says_why(tmp_path):
    sections = {s.name: s for s in _plan(tmp_path, datasets=("mnist",), seeds_flag=False)}
    assert sections["seeds-together"].skip == gpu.STATUS_UNAVAILABLE
    assert "CIFAR-10" in sections["throughput-convnet"].skip
    full = sections["full"]
    suite = full.steps[0][1][full.steps[0][1].index("--suite") + 1]
    assert suite.endswith("full-mnist.toml") and Path(suite) in full.files


def _section(name, code, cap, cut_ok=False, min_s=0.0):
    return gpu.Section(name, "test", "-", [("step", [sys.executable, "-c", code])], cap, min_s, cut_ok=cut_ok)


def test_a_section_stops_at_its_cap_and_a_failure_is_named(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    far = time.monotonic() + 600
    t = time.monotonic()
    cut = gpu.run_section(_section("slow", "import time; time.sleep(60)", cap=1), tmp_path, far, env)
    assert time.monotonic() - t < 30
    assert cut["status"] == "cut at its limit in step step" and cut["steps"]["step"]["exit"] is None
    assert (tmp_path / "slow" / "log.txt").read_text().startswith("$ ")
    full = gpu.run_section(_section("full", "import time; time.sleep(60)", cap=1, cut_ok=True), tmp_path, far, env)
    assert full["status"] == gpu.STATUS_CUT
    failed = gpu.run_section(_section("bad", "raise SystemExit(3)", cap=30), tmp_path, far, env)
    assert failed["status"] == "failed: step step exited 3"
    late = gpu.run_section(_section("late", "pass", cap=30, min_s=100), tmp_path, time.monotonic() + 50, env)
    assert late["status"].startswith("not started") and not late["steps"]
    summary = {"results": {"slow": cut, "full": full, "bad": failed, "late": late}}
    assert gpu.crashed(summary, strict=False) == ["bad: failed: step step exited 3"]
    assert [c.split(":")[0] for c in gpu.crashed(summary, strict=True)] == ["slow", "bad", "late"]


THROUGHPUT = {"backend": "jax", "train_samples": 55000, "plain_samples_per_s": 50000.0, "speedup_min": 1.0,
              "speedup_max": 1.3, "train_speedup": 1.2}


def _write_outputs(folder: Path) -> dict:
    """What the benchmarks would have written on a GPU, in each section's folder."""
    rows = {"mlp32": [dict(THROUGHPUT, engine=e, model="mlp32", strategy=s, normbench_samples_per_s=v, speedup=x)
                      for e, s, v, x in (("fit", "none", 70000.0, 1.1), ("scan", "none", 80000.0, 0.9),
                                         ("scan", "batchnorm", 60000.0, 1.2))]}
    for model, model_rows in rows.items():
        (folder / f"throughput-{model}").mkdir(parents=True)
        with open(folder / f"throughput-{model}" / "perf.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(model_rows[0]))
            w.writeheader()
            w.writerows(model_rows)
        (folder / f"throughput-{model}" / "log.txt").write_text("$ throughput\n")
    (folder / "jobs-grid").mkdir()
    with open(folder / "jobs-grid" / "perf_grid.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["jobs", "runs", "wall_s", "aggregate_gflops_per_s"])
        w.writeheader()
        w.writerows([{"jobs": 1, "runs": 8, "wall_s": 60.0, "aggregate_gflops_per_s": 900.0},
                     {"jobs": "auto (8)", "runs": 8, "wall_s": 15.0, "aggregate_gflops_per_s": 3600.0}])
    (folder / "jobs-grid" / "perf.md").write_text("## Grid wall time\n\nProjection for `full` (90 runs): 4 minutes.\n")
    (folder / "jobs-grid" / "log.txt").write_text("$ grid\n")
    (folder / "seeds-together").mkdir()
    (folder / "seeds-together" / "log.txt").write_text("$ separate\n$ together\n")
    (folder / "full" / "records").mkdir(parents=True)
    (folder / "full" / "log.txt").write_text("$ normbench run\n[1/90] mnist/mlp8/none/seed0\n")
    ran = {"status": gpu.STATUS_OK, "wall_s": 1.0, "steps": {"x": {"exit": 0, "wall_s": 1.0}}, "started_at_s": 0.0}
    return {"env": dict(ran), "throughput-mlp8": {"status": "skipped: x", "wall_s": 0.0, "steps": {}},
            "throughput-mlp32": dict(ran),
            "seeds-together": dict(ran, steps={"separate": {"exit": 0, "wall_s": 60.0},
                                               "together": {"exit": 0, "wall_s": 10.0}}),
            "jobs-grid": dict(ran), "throughput-convnet": {"status": "skipped: y", "wall_s": 0.0, "steps": {}},
            "full": dict(ran, status=gpu.STATUS_CUT, wall_s=200.0, steps={"full": {"exit": None, "wall_s": 200.0}})}


def test_figures_and_verdicts_come_from_the_benchmarks_files(tmp_path):
    results = _write_outputs(tmp_path)
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "log.txt").write_text("$ env\n")
    figures = gpu.collect(tmp_path, results)
    assert [r["normbench_samples_per_s"] for r in figures["throughput"]] == [70000.0, 80000.0, 60000.0]
    assert {r["source"] for r in figures["throughput"]} == {"perf.csv"}
    assert figures["jobs_grid"][1] == {"jobs": "auto (8)", "runs": 8, "wall_s": 15.0, "aggregate_gflops_per_s": 3600.0}
    assert figures["jobs_grid_projection"] == "Projection for `full` (90 runs): 4 minutes."
    assert figures["seeds"]["ratio"] == 6.0
    assert figures["full"] == {"runs_done": 0, "ok": 0, "runs_total": 90, "wall_s": 200.0, "finished": False}
    meta = {"device_kind": "gpu", "full_suite": "full", "seeds": 10}
    cpu = {("mlp32", "none"): 6435.0, ("mlp32", "batchnorm"): 6500.0}
    verdicts = {name.split(" ")[0]: (verdict, detail)
                for name, verdict, detail in gpu.targets(figures, results, cpu, meta)}
    assert verdicts["`full`"][0] == "unmeasured"  # cut before 5 minutes: neither met nor missed
    assert verdicts["mlp32"][0] == "not met"  # batchnorm 60,000 / 6,500 = 9.2x; none's best engine 12.4x
    assert "none 80,000/s = 12.4x" in verdicts["mlp32"][1] and "batchnorm 60,000/s = 9.2x" in verdicts["mlp32"][1]
    assert verdicts[">="] == ("not met", "below on 1 of 3: scan mlp32/none 0.90x")
    assert verdicts["10"][0] == "met"
    results["full"] = dict(results["full"], status=gpu.STATUS_OK, wall_s=280.0)
    assert gpu.targets(gpu.collect(tmp_path, results), results, cpu, meta)[0][1] == "met"
    results["full"] = dict(results["full"], status=gpu.STATUS_CUT, wall_s=400.0)
    assert gpu.targets(gpu.collect(tmp_path, results), results, cpu, meta)[0][1] == "not met"


PRINTED = ("jax: measuring mlp32 x none,batchnorm, 2 repeats of 4 epochs\n"  # as benchmarks/throughput.py prints
           "  fit  mlp32    none       normbench   60,405/s  plain   46,912/s  "
           "speedup 1.22x [1.11-1.45]  training 1.64x\n"
           "  scan mlp32    batchnorm  normbench   47,295/s  plain   31,976/s  "
           "speedup 1.43x [1.32-1.65]  training 1.65x\n")


def test_a_throughput_benchmark_stopped_before_its_files_keeps_the_rows_it_printed(tmp_path):
    (tmp_path / "log.txt").write_text(PRINTED)
    rows = gpu.throughput_rows(tmp_path)
    assert [(r["engine"], r["strategy"], r["normbench_samples_per_s"], r["speedup_max"], r["source"]) for r in rows] \
        == [("fit", "none", 60405.0, 1.45, "log"), ("scan", "batchnorm", 47295.0, 1.65, "log")]
    assert gpu.throughput_rows(tmp_path / "nothing") == []


def test_the_summary_round_trips_and_a_missing_log_is_a_layout_problem(tmp_path):
    folder = tmp_path / "gpu-nvidia-h200"
    folder.mkdir()
    results = _write_outputs(folder)
    (folder / "env").mkdir()
    (folder / "env" / "log.txt").write_text("$ env\n")
    (folder / "throughput-mlp8").mkdir()
    (folder / "throughput-mlp8" / "log.txt").write_text(PRINTED.replace("mlp32", "mlp8 "))  # stopped: no perf.csv
    results["throughput-mlp8"] = dict(results["throughput-mlp32"], status="cut at its limit in step throughput")
    sections = _plan(folder)
    meta = {"device": "GPU: NVIDIA H200", "device_kind": "gpu", "mode": "real", "backend": "jax", "budget_s": 540,
            "date": "2026-12-04 17:00", "datasets": ["mnist"], "full_suite": "full", "seeds": 10}
    figures = gpu.collect(folder, results)
    summary = {"made_by": gpu.MADE_BY, "label": folder.name, "meta": meta, "complete": True, "elapsed_s": 530.0,
               "plan": [gpu.plan_entry(s) for s in sections], "results": results, "figures": figures,
               "targets": gpu.targets(figures, results, {}, meta)}
    gpu.write_summary(folder, summary)
    assert gpu.layout_problems(folder) == []
    text = (folder / "summary.md").read_text()
    assert text.startswith("# GPU measurements: gpu-nvidia-h200\n")
    assert "| full | the `full` suite with --jobs auto for the rest of the budget | all 90 runs | +465 s | until the " \
           "deadline |" in text
    assert json.loads((folder / "summary.json").read_text())["results"]["full"]["status"] == gpu.STATUS_CUT
    assert "| fit* | mlp8 | none | - | 60,405 | 46,912 | 1.22x [1.11-1.45] | 1.64x |" in text
    assert "| fit | mlp32 | none | 55,000 | 70,000 |" in text and "\\* read from the benchmark's log" in text
    (folder / "jobs-grid" / "log.txt").unlink()
    assert gpu.layout_problems(folder) == ["section jobs-grid ran but has no jobs-grid/log.txt"]
    (folder / "summary.json").write_text("{}")
    assert gpu.layout_problems(folder)[0] == "summary.json was not written by benchmarks/gpu.py"


def test_publishing_replaces_its_own_section_of_perf_md_and_keeps_the_others(tmp_path):
    folder = tmp_path / "gpu-nvidia-h200"
    folder.mkdir()
    perf = tmp_path / "perf.md"
    perf.write_text("# normbench performance\n\nintro\n\n# Diagnostics\n\nkept\n")
    (folder / "summary.md").write_text("# GPU measurements: gpu-nvidia-h200\n\nfirst\n\n### Plan\n\nrows\n")
    gpu.publish(folder, perf)
    (folder / "summary.md").write_text("# GPU measurements: gpu-nvidia-h200\n\nsecond\n")
    gpu.publish(folder, perf)
    text = perf.read_text()
    assert text.count("# GPU measurements: gpu-nvidia-h200") == 1 and "second" in text and "first" not in text
    assert "# Diagnostics\n\nkept" in text and text.startswith("# normbench performance\n\nintro")


@pytest.mark.parametrize("mode", ["real", "tiny"])
def test_the_plan_prints_without_running_anything(tmp_path, mode):
    lines = gpu.plan_markdown([gpu.plan_entry(s) for s in _plan(tmp_path, mode=mode)], 540)
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| section")]
    assert len(table) == 7
    assert all(line.count("|") == 6 for line in table)
