"""``seeds-together`` (``normbench run --seeds-together``): in this process, the runs that differ only in their
seed trained as one JAX program per group (:mod:`normbench.together`), each recorded as a separate run would be."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .. import stop
from ..env import keras_backend
from ..errors import ConfigError
from ..registry import EXECUTORS
from ..spec import RunSpec


def seed_groups(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """The specs grouped by everything but their seed, in the order each group first appears."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        key = json.dumps({k: v for k, v in spec.canonical().items() if k != "seed"}, sort_keys=True)
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def check_seeds_together(backend: str, executor: str | None, jobs) -> None:
    """What ``--seeds-together`` needs, checked before anything trains: JAX, and this process (one run at a time
    of the other executors would not share a program)."""
    if backend != "jax":
        raise ConfigError(f"--seeds-together trains the seeds of a run as one JAX program; this run uses the {backend} "
                          f"backend: add --backend jax (or set KERAS_BACKEND=jax), or drop --seeds-together")
    if executor not in (None, "seeds-together") or jobs != 1:
        raise ConfigError("--seeds-together trains each group of seeds in this process; drop --executor and --jobs, "
                          "or drop --seeds-together")


@EXECUTORS.register(name="seeds-together")
def seeds_together(todo, ctx):
    """In this process, each group of runs that differ only in their seed as one JAX program (--seeds-together)."""
    check_seeds_together(keras_backend(), None, ctx.jobs)
    position = {spec.run_id: i for i, spec in enumerate(todo)}
    for group in seed_groups(todo):
        stop.checkpoint()
        yield from ctx.run_seeds(group, data_dir=ctx.data_dir, log=ctx.log, engine=ctx.engine,
                                 header=lambda i, spec: ctx.header(position[spec.run_id], spec))
