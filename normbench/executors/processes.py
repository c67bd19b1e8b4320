"""``processes``: ``--jobs N`` worker processes on this machine claim runs from the grid.

Each worker is a fresh interpreter (``spawn``) that starts its backend with settings for
sharing: on a GPU no backend preallocates the device's memory and each job is capped at
``0.9 / N`` of it; on a CPU the cores are split between the jobs (each worker pinned to its
own cores, its thread pools sized to match). Workers claim the next run from a queue and
send the finished record back as JSON; only this process writes records (through the
grid), so kill -9, Ctrl-C and resume behave as with ``local``. A worker that dies is
replaced and its run recorded as ``error`` (retried on resume); a worker whose parent
died stops on its own.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import threading
import time

from .. import record as rec_mod
from .. import stop
from ..errors import ConfigError
from ..registry import EXECUTORS
from ..env import FAULT_ENV, GPU_MEMORY_FRACTION_ENV, gpu_memory_fraction, keras_backend
from ..spec import RunSpec

GPU_MEMORY_SHARE = 0.9  # of the device's memory, split between the jobs
MAX_GPU_JOBS = 12  # the most jobs `auto` puts on one GPU (the H100 run used 8-12)


def visible_gpus() -> int:
    """GPUs this machine shows, without starting a backend (which would claim GPU memory in this process)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("-1", "") or os.environ.get("JAX_PLATFORMS") == "cpu":
        return 0
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def cpu_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        return 8.0


JOB_MEMORY_GIB = 3.0  # the largest process peak of any `standard` run was 3.0 GiB (results/history/standard/README.md)


def auto_jobs(n_runs: int, *, gpus: int | None = None, cores: int | None = None, mem_gib: float | None = None) -> tuple[int, str]:
    """How many jobs ``--jobs auto`` starts, and why (printed to the user)."""
    gpus = visible_gpus() if gpus is None else gpus
    cores = len(cpu_cores()) if cores is None else cores
    mem_gib = memory_gib() if mem_gib is None else mem_gib
    by_memory = max(1, int(mem_gib // JOB_MEMORY_GIB))
    if gpus:
        # a run at batch 128 uses a small fraction of a data-centre GPU; its host-side dispatch needs a core
        n = max(1, min(n_runs, MAX_GPU_JOBS, cores - 1, by_memory))
        why = (f"{gpus} GPU(s) visible, {cores} CPU cores, {mem_gib:.0f} GiB: {n} jobs share the GPU "
               f"(at most {MAX_GPU_JOBS}, a core each for dispatch, {JOB_MEMORY_GIB:g} GiB of host memory each)")
    else:
        # one core per job: small steps do not use 2 cores well, so 2 jobs of 1 core finish a grid sooner than 1 job
        # of 2 cores (measured by `make perf-grid`: results/perf.md, "Grid wall time")
        n = max(1, min(n_runs, cores, by_memory))
        why = f"no GPU, {cores} CPU cores, {mem_gib:.0f} GiB: {n} job(s) of {max(1, cores // n)} core(s) each"
    return n, why


def too_many_jobs(jobs: int, n_runs: int, *, gpus: int | None = None, cores: int | None = None,
                  mem_gib: float | None = None) -> str | None:
    """Why ``--jobs jobs`` is more than this machine holds (a warning given before anything trains), or None.

    More jobs than ``auto`` would start on a CPU only split the same cores (each run slower, and its seconds
    measured under contention); more than the host memory holds at :data:`JOB_MEMORY_GIB` each risks the kernel
    killing workers mid-run (each such run is recorded as an error and trained again on resume)."""
    n = min(jobs, n_runs)
    best, _ = auto_jobs(n_runs, gpus=gpus, cores=cores, mem_gib=mem_gib)
    if n <= best:
        return None
    gpus = visible_gpus() if gpus is None else gpus
    cores = len(cpu_cores()) if cores is None else cores
    mem_gib = memory_gib() if mem_gib is None else mem_gib
    problems = []
    if n * JOB_MEMORY_GIB > mem_gib:
        problems.append(f"at up to {JOB_MEMORY_GIB:g} GiB each they need more than this machine's {mem_gib:.0f} GiB "
                        f"of memory: the system may kill workers mid-run (each such run is recorded as an error)")
    if not gpus and n > cores:
        problems.append(f"they share {cores} CPU core(s), so each run is slower and its seconds are measured under "
                        f"contention")
    elif gpus and n > best:
        problems.append(f"more than the {best} that `--jobs auto` puts on {gpus} GPU(s) with {cores} CPU cores")
    return (f"--jobs {jobs}: {n} runs at once; " + "; ".join(problems)
            + f". Use --jobs auto ({best} here) or --jobs {best}.")


def sharing_env(n: int, *, gpu: bool, threads: int | None = None) -> dict[str, str]:
    """Environment for a worker that shares the device with ``n - 1`` others (set before its backend starts)."""
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    if gpu:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{GPU_MEMORY_SHARE / n:.3f}"
        env[GPU_MEMORY_FRACTION_ENV] = f"{GPU_MEMORY_SHARE / n:.3f}"  # torch reads it in the worker
    if threads:
        for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)  # the grid is gone: nobody would write this worker's record
        time.sleep(1.0)


def _reference(func) -> str:
    """``module:name`` of a module-level function, for a worker to import once its environment is set."""
    return f"{func.__module__}:{func.__qualname__}"


def _worker(run_ref: str, wid: int, tasks, results, env: dict, cores: list[int], parent: int, data_dir, engine,
            concurrent: int) -> None:
    """A worker process: set up sharing, then run the specs it is handed with the grid's run function (``run_ref``,
    :func:`_reference`) until it gets None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent ends a worker with SIGTERM (terminate())
    os.environ.update(env)
    if cores:
        try:
            os.sched_setaffinity(0, cores)
        except (AttributeError, OSError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    fraction = gpu_memory_fraction()
    if fraction and keras_backend() == "torch":  # JAX and TF read their settings from the environment
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(fraction)
    # imported only now, after the sharing environment is set: numpy's and the backends' thread pools read it at import
    module, _, name = run_ref.partition(":")
    run = getattr(importlib.import_module(module), name)

    def log(msg: str) -> None:
        results.put(("log", wid, msg))

    while True:
        item = tasks.get()
        if item is None:
            return
        spec = RunSpec.from_dict(json.loads(item))
        if os.environ.get(FAULT_ENV) == spec.run_id:
            os._exit(17)  # tests only: a worker that dies mid-run
        record = run(spec, data_dir=data_dir, log=log, engine=engine, concurrent_runs=concurrent)
        results.put(("done", wid, json.dumps(rec_mod.clean(record))))


class _Job:
    """One worker process, its own task queue, and the run it holds (the parent hands out runs one at a time)."""

    def __init__(self, process, tasks):
        self.process, self.tasks, self.run_id = process, tasks, None


@EXECUTORS.register(name="processes")
def processes(todo, ctx):
    """--jobs N worker processes on this machine, sharing its GPU or splitting its cores."""
    if not todo:
        return
    n = min(int(ctx.jobs), len(todo))
    if n < 1:
        raise ConfigError(f"--jobs must be a positive integer or 'auto', got {ctx.jobs!r}")
    gpu = visible_gpus() > 0
    cores = cpu_cores()
    per_job = max(1, len(cores) // n)
    env = sharing_env(n, gpu=gpu, threads=None if gpu else per_job)
    mp = multiprocessing.get_context("spawn")
    results = mp.Queue()
    pending = list(todo)
    by_id = {s.run_id: s for s in todo}
    jobs: dict[int, _Job] = {}
    started = 0

    def spawn(slot: int) -> None:
        my_cores = [] if gpu else cores[slot * per_job : (slot + 1) * per_job]
        tasks = mp.Queue()
        p = mp.Process(target=_worker, name=f"normbench-job{slot + 1}", daemon=True,
                       args=(_reference(ctx.run), slot, tasks, results, env, my_cores, os.getpid(), ctx.data_dir, ctx.engine, n))
        p.start()
        jobs[slot] = _Job(p, tasks)

    def hand_out(slot: int) -> None:
        nonlocal started
        job = jobs[slot]
        if not pending:
            job.run_id = None
            return
        spec = pending.pop(0)
        job.run_id = spec.run_id
        ctx.log(ctx.header(started, spec) + f" [job {slot + 1}]")
        started += 1
        job.tasks.put(json.dumps(spec.to_dict()))

    ctx.log(f"processes: {n} jobs" + (f" sharing the GPU (memory cap {GPU_MEMORY_SHARE / n:.0%} each)" if gpu
                                     else f" of {per_job} CPU core(s) each"))
    for slot in range(n):
        spawn(slot)
        hand_out(slot)
    try:
        while any(job.run_id for job in jobs.values()):
            stop.checkpoint()
            try:
                kind, slot, payload = results.get(timeout=0.5)
            except queue.Empty:
                for slot, job in list(jobs.items()):
                    if job.run_id and not job.process.is_alive():
                        if job.process.exitcode in (-signal.SIGTERM, -signal.SIGINT):  # killed with the grid
                            time.sleep(0.2)  # the parent's own signal, sent to the group, lands meanwhile
                            stop.checkpoint()
                            raise stop.StopRequested(-job.process.exitcode)
                        spec = by_id[job.run_id]
                        job.run_id = None
                        yield spec, rec_mod.error_record(
                            spec, f"worker process died (exit code {job.process.exitcode}) during the run")
                        if pending:
                            spawn(slot)
                            hand_out(slot)
                continue
            if kind == "log":
                ctx.log(f"  [job {slot + 1}] {payload.lstrip()}")
                continue
            record = json.loads(payload)
            jobs[slot].run_id = None
            hand_out(slot)
            yield by_id[record["run_id"]], record
    finally:
        interrupted = any(job.run_id for job in jobs.values())
        for job in jobs.values():
            if job.process.is_alive():
                job.tasks.put(None)
        for job in jobs.values():
            job.process.join(timeout=0.0 if interrupted else 10.0)
            if job.process.is_alive():
                job.process.terminate()
                job.process.join(timeout=5.0)
            job.tasks.cancel_join_thread()
        results.cancel_join_thread()
