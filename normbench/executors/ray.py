"""``ray``: each run is a Ray task on a cluster (or a local Ray instance).

The record comes back to the driver, which writes it, so no shared file system is
needed. A worker that dies is retried ``max_retries`` times, then its run is recorded as
``error`` and the rest of the grid goes on. Ctrl-C cancels outstanding tasks.
Fractional GPUs (``--gpus-per-run 0.25``) let several runs share one GPU; each worker
then caps its backend's GPU memory at that fraction.
"""

from __future__ import annotations

import math
import os

from .. import record as rec_mod
from .. import stop
from ..errors import ConfigError
from ..registry import EXECUTORS
from ..spec import RunSpec
from ..env import FAULT_ENV
from .processes import sharing_env


def _ray_task(run, spec_dict: dict, data_dir: str | None, engine: str | None, concurrent: int | None) -> dict:
    """Runs on a Ray worker: one ``run`` (the grid's run function, by reference), its record returned to the driver."""
    spec = RunSpec.from_dict(spec_dict)
    if os.environ.get(FAULT_ENV) == spec.run_id:
        os._exit(17)  # simulate a worker that dies mid-run
    return run(spec, data_dir=data_dir, log=lambda _msg: None, engine=engine, concurrent_runs=concurrent)


@EXECUTORS.register(name="ray")
def ray(todo, ctx):
    """One Ray task per run on a cluster or a local Ray instance (pip install 'normbench[ray]')."""
    try:
        import ray as ray_lib
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, which is an optional extra: pip install 'normbench[ray]' "
            "(or pip install -e '.[ray]' in a checkout)."
        ) from None
    opts = dict(ctx.options)
    address = opts.get("address")
    num_cpus = float(opts.get("num_cpus", 1))
    num_gpus = float(opts.get("num_gpus", 0))
    max_retries = int(opts.get("max_retries", 2))
    if not (0 <= num_gpus <= 1 or num_gpus == int(num_gpus)):
        raise ConfigError(f"--gpus-per-run must be a fraction in (0, 1] or a whole number, got {num_gpus:g}")
    env = {k: v for k, v in os.environ.items() if k.startswith(("NORMBENCH_", "KERAS_BACKEND", "TF_CPP", "XLA_"))}
    share = max(1, math.floor(1 / num_gpus)) if 0 < num_gpus < 1 else 1
    if share > 1:
        env.update(sharing_env(share, gpu=True))
    started_here = not ray_lib.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": opts.get("local_cpus")}
        with stop.kept_handlers():  # ray.init sets a SIGTERM handler (sys.exit) over the safe-point one
            ray_lib.init(runtime_env={"env_vars": env}, log_to_driver=False, include_dashboard=False, **kwargs)
        resources = ray_lib.cluster_resources()
        ctx.log(f"ray: {'connected to ' + address if address else 'local instance'} "
                f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)"
                + (f"; up to {share} runs share each GPU" if share > 1 else ""))
    resources = ray_lib.cluster_resources()
    short = [f"{option} {need:g}, but the {'cluster' if address else 'local Ray instance'} has "
             f"{resources.get(kind, 0):g} {kind}s" for option, need, kind in
             (("--gpus-per-run", num_gpus, "GPU"), ("--cpus-per-run", num_cpus, "CPU"))
             if need > resources.get(kind, 0)]
    if short:  # Ray would keep the tasks pending forever: no run could ever start
        fix = ("start the cluster's GPU/CPU nodes first (`ray start --address=...` on each)" if address else
               "give --address of a cluster that has them, or ask for less (--gpus-per-run 0 on a machine without a "
               "GPU)")
        raise ConfigError(f"{'; '.join(short)}: Ray could never schedule a run, and the grid would wait forever. "
                          f"{fix[0].upper() + fix[1:]}.")
    # The most runs that can share one device: by GPU fraction on a GPU, else by CPUs per run on a node (an upper bound).
    if num_gpus > 0:
        concurrent = min(share, len(todo))
    else:
        cpus = ray_lib.cluster_resources().get("CPU", 1)
        concurrent = max(1, min(len(todo), int(cpus // max(num_cpus, 1e-9))))
    task = ray_lib.remote(_ray_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
    refs = {task.remote(ctx.run, spec.to_dict(), ctx.data_dir, ctx.engine, concurrent): spec for spec in todo}
    pending = list(refs)
    try:
        while pending:
            stop.checkpoint()
            done, pending = ray_lib.wait(pending, num_returns=1, timeout=0.5)  # a stop request is seen within 0.5 s
            if not done:
                continue
            spec = refs[done[0]]
            try:
                record = ray_lib.get(done[0])
            except ray_lib.exceptions.RayError as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                record = rec_mod.error_record(spec, f"{type(e).__name__} after {max_retries} retries: {first}")
            yield spec, record
    except KeyboardInterrupt:
        for ref in pending:
            ray_lib.cancel(ref, force=True)
        ctx.log(f"ray: cancelled {len(pending)} outstanding runs")
        raise
    finally:
        if started_here:
            ray_lib.shutdown()
