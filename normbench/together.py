"""Seeds as one program (JAX): runs that differ only in their seed, trained together.

Each run of a group builds, measures and records itself exactly as alone (:func:`normbench.runner.run_steps`:
its own seed, initial weights, batch order, dropout seed state, BN statistics, evaluation, probe, precise BN
and diagnostics); only the training epochs are shared. Each epoch is one compiled program: ``lax.scan`` over
the epoch's steps, each step ``jax.vmap`` of Keras' pure ``train_step`` over the runs' stacked states
(trainable, non-trainable (BN moving statistics, AlphaDropout's seed state), optimizer and metric variables)
and their own batch indices, the training split on the device once and shared (the first run's copy; the
others' training splits never leave the host). After the epoch each run gets its slice back in its own model
and measures it.

The records are those of separate runs (same run ids; the weights and metrics agree to float rounding: a
vmapped matrix product may sum in another order than an unbatched one), and each says how it was trained:
``performance.trained_as = {"seeds_together": K}``, with ``concurrent_runs = K`` since its seconds are the
shared program's (an epoch's ``epoch_s`` is the wall time of the epoch that trained all K runs).

Opt-in (``normbench run --seeds-together``, executor ``seeds-together``): whether it pays depends on the device;
benchmarks/seeds_together.py measures it, and docs/backends.md quotes what it measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from . import stop
from .errors import ConfigError, say
from .executors.together import check_seeds_together
from .runner import Epoch, finish, run_steps
from .spec import RunSpec

Log = Callable[[str], None]


class Lanes:
    """The shared epoch program of K scan engines whose models differ only in their variables' values."""

    def __init__(self, trainers: Sequence):
        import jax
        import jax.numpy as jnp

        self.trainers = list(trainers)
        model = self.trainers[0].model  # its train_step is pure: any of the K models' structure serves all of them
        self.batch_size = self.trainers[0].batch_size

        def step(states, x, y, idx):  # idx: (K, batch), one row of sample indices per run
            def lane(state, rows):
                return model.train_step(state, (jnp.take(x, rows, axis=0), jnp.take(y, rows, axis=0)))[1]

            return jax.vmap(lane)(states, idx)

        def epoch(states, x, y, idx):  # idx: (steps, K, batch)
            return jax.lax.scan(lambda carry, rows: (step(carry, x, y, rows), None), states, idx)[0]

        # the stacked states are this program's own copies: donated, as the scan engine donates its state
        self._step, self._epoch = jax.jit(step, donate_argnums=0), jax.jit(epoch, donate_argnums=0)

    def train_epoch(self, orders: Sequence[np.ndarray]) -> list[dict]:
        """One epoch of every run, run k in ``orders[k]``; each run's fit logs (its model holds its new state)."""
        import jax
        import jax.numpy as jnp

        for t in self.trainers:
            t.model.reset_metrics()
        states = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *[t.state() for t in self.trainers])
        (x, y), b = self.trainers[0].device_data(), self.batch_size  # one device copy for the group
        full = len(orders[0]) // b
        if full:
            idx = np.stack([o[: full * b].reshape(full, b) for o in orders], axis=1)
            states = self._epoch(states, x, y, jnp.asarray(idx))
        if len(orders[0]) > full * b:  # the last, partial batch, as one more step (as fit and the scan engine do)
            states = self._step(states, x, y, jnp.asarray(np.stack([o[full * b :] for o in orders])))
        logs = []
        for k, t in enumerate(self.trainers):
            t.assign_state(jax.tree_util.tree_map(lambda a, k=k: a[k], states))
            logs.append({name: float(v) for name, v in t.model.get_metrics_result().items()})
        return logs


def _tagged(log: Log, tag: str) -> Log:
    """A run's log, its lines tagged with its seed (the runs of a group print their epochs in turn)."""
    return lambda msg: log(f"{msg}  [{tag}]")


def _trained_as(record: dict, runs: int) -> dict:
    """The record of a run trained in a program of ``runs`` seeds says so (its seconds were shared)."""
    record["performance"] = {**(record.get("performance") or {}), "trained_as": {"seeds_together": runs},
                             "concurrent_runs": runs}
    return record


def run_together(specs: Sequence[RunSpec], *, data_dir: str | None = None, log: Log = say, engine: str | None = None,
                 header: Callable = lambda i, spec: spec.label) -> Iterator[tuple[RunSpec, dict]]:
    """Train ``specs`` (identical but for their seeds) as one program; yield ``(spec, record)`` as each finishes.

    Runs whose engine is not ``scan`` (a conv net, ``--engine fit``, step probes) cannot be vmapped: the log says
    so and they run one after another, as without the option. A run that fails or diverges is recorded at once;
    its lane keeps training in the program unread, so the others' program is not recompiled.
    """
    import keras

    check_seeds_together(keras.backend.backend(), None, 1)
    if len({s.with_(seed=0).run_id for s in specs}) > 1:
        raise ConfigError("run_together takes runs that differ only in their seed")
    pending: list[tuple[RunSpec, object, Epoch]] = []
    for i, spec in enumerate(specs):
        log(header(i, spec))
        steps = run_steps(spec, data_dir=data_dir, log=_tagged(log, f"seed {spec.seed}"), engine=engine)
        try:
            request = next(steps)
        except StopIteration as done:  # failed (or diverged) before its first epoch
            yield spec, done.value
            continue
        if request.trainer.name != "scan":
            log(f"    seeds together: {spec.label} trains with the {request.trainer.name} engine, which cannot be "
                f"vmapped; its seeds run one after another")
            for earlier, its_steps, its_request in pending:  # none in practice: the group's models are alike
                yield earlier, finish(its_steps, its_request)
            yield spec, finish(steps, request)
            for j, rest in enumerate(specs[i + 1 :], start=i + 1):
                log(header(j, rest))
                yield rest, finish(run_steps(rest, data_dir=data_dir, log=log, engine=engine))
            return
        pending.append((spec, steps, request))
    if len(pending) == 1:
        spec, steps, request = pending[0]
        yield spec, finish(steps, request)
        return
    if not pending:
        return
    runs = len(pending)
    lanes = Lanes([request.trainer for _, _, request in pending])
    log(f"    seeds together: {runs} runs ({', '.join(f'seed {s.seed}' for s, _, _ in pending)}) train as one program")
    active = list(range(runs))
    orders = [request.order for _, _, request in pending]
    try:
        while active:
            t = time.perf_counter()
            try:
                logs = lanes.train_epoch(orders)
                failure = None
            except Exception as e:  # noqa: BLE001  (each run records it, as it would have alone)
                failure = e
            seconds = time.perf_counter() - t
            still = []
            for k in active:
                spec, steps, _ = pending[k]
                try:
                    request = steps.throw(failure) if failure is not None else steps.send((logs[k], seconds))
                except StopIteration as done:
                    yield spec, _trained_as(done.value, runs)
                    continue
                orders[k] = request.order
                still.append(k)
            active = still
            stop.checkpoint()
    finally:
        for _, steps, _ in pending:
            steps.close()  # runs cut short (Ctrl-C, a stop request) end here without a record, as alone
