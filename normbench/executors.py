"""Executors turn a list of run specs into records; the driver (``run_grid``) writes them.

- ``local`` (default): in this process, one run after another.
- ``ray``: each run is a Ray task on a cluster (or a local Ray instance); the record
  comes back to the driver, which writes it, so no shared file system is needed.
  A worker that dies is retried ``max_retries`` times, then its run is recorded as
  ``error`` and the rest of the grid goes on. Ctrl-C cancels outstanding tasks.

Each executor is a generator of ``(spec, record)`` in completion order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

from .errors import ConfigError
from .spec import RunSpec

EXECUTORS = ("local", "ray")
FAULT_ENV = "NORMBENCH_FAULT_INJECT_RUN"  # tests only: a worker running this run id dies at once


def local(todo: Sequence[RunSpec], *, data_dir, log: Callable[[str], None], header) -> Iterator[tuple[RunSpec, dict]]:
    from .runner import run

    for i, spec in enumerate(todo):
        log(header(i, spec))
        yield spec, run(spec, data_dir=data_dir, log=log)


def _ray_task(spec_dict: dict, data_dir: str | None) -> dict:
    """Runs on a Ray worker: one run, its record returned to the driver."""
    spec = RunSpec.from_dict(spec_dict)
    if os.environ.get(FAULT_ENV) == spec.run_id:
        os._exit(17)  # simulate a worker that dies mid-run
    from .runner import run

    return run(spec, data_dir=data_dir, log=lambda _msg: None)


def error_record(spec: RunSpec, message: str) -> dict:
    from .runner import new_record

    record = new_record(spec)
    record.update(status="error", error=message)
    return record


def ray(
    todo: Sequence[RunSpec],
    *,
    data_dir,
    log: Callable[[str], None],
    address: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 2,
    local_cpus: int | None = None,
) -> Iterator[tuple[RunSpec, dict]]:
    try:
        import ray as ray_lib
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, which is an optional extra: pip install 'normbench[ray]' "
            "(or pip install -e '.[ray]' in a checkout)."
        ) from None
    env = {k: v for k, v in os.environ.items() if k.startswith(("NORMBENCH_", "KERAS_BACKEND", "TF_CPP"))}
    started_here = not ray_lib.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": local_cpus}
        ray_lib.init(runtime_env={"env_vars": env}, log_to_driver=False, include_dashboard=False, **kwargs)
        resources = ray_lib.cluster_resources()
        log(f"ray: {'connected to ' + address if address else 'local instance'} "
            f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)")
    task = ray_lib.remote(_ray_task).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
    refs = {task.remote(spec.to_dict(), data_dir): spec for spec in todo}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray_lib.wait(pending, num_returns=1)
            spec = refs[done[0]]
            try:
                record = ray_lib.get(done[0])
            except ray_lib.exceptions.RayError as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                record = error_record(spec, f"{type(e).__name__} after {max_retries} retries: {first}")
            yield spec, record
    except KeyboardInterrupt:
        for ref in pending:
            ray_lib.cancel(ref, force=True)
        log(f"ray: cancelled {len(pending)} outstanding runs")
        raise
    finally:
        if started_here:
            ray_lib.shutdown()
