"""Training engines: how the runner performs one epoch of optimizer steps (used only by :mod:`normbench.runner`).

Both engines take the epoch's batch order from :func:`epoch_order` (a function of the run's
seed and the epoch alone, the same on every backend), so they compute the same thing:

- ``fit``: Keras ``model.fit`` over the training split in that order (``shuffle=False``), one
  call per epoch. Every backend (on TensorFlow the batches come from :func:`tf_batches`).
- ``scan``: JAX only. The training split lives on the device (moved there once, when first
  trained on); each epoch is one compiled program, ``lax.scan`` over Keras' own pure
  ``train_step`` (``stateless_call`` and ``optimizer.stateless_apply`` inside), so max-norm
  constraints, BN moving statistics and AlphaDropout's seed state behave exactly as under
  ``fit``. The state is donated to the compiled program (one copy of weights and optimizer
  state, updated in place); the engine calls no private Keras method. A final partial batch is
  one more compiled step, as ``fit`` does it. Measurement uses one compiled inference function
  over device-resident evaluation sets.

Engines are execution settings: they do not change the run id; every record names its engine.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .execution import is_conv

ENGINES = ("fit", "scan")
EVAL_BATCH = 1024


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch ``epoch`` (1-based) visits the ``n`` training samples."""
    return np.random.default_rng([int(seed), int(epoch), 0x4E42]).permutation(n)


def default_engine(backend: str, spec, model=None) -> str:
    """The engine a run gets when none is asked for.

    ``scan`` on JAX for models without convolutions, where the throughput benchmark measured it
    at least as fast as ``fit`` on most MLP rows; conv nets stay on ``fit``, which XLA's CPU backend
    ran many times faster than a scanned epoch. The measurements: results/perf.md (engines rows, and
    "Numbers moved out of docstrings"); on a GPU neither has been measured yet.
    """
    if backend == "jax" and not spec.probe_every_steps and (model is None or not is_conv(model)):
        return "scan"
    return "fit"


def resolve_engine(engine: str | None, backend: str, spec, model=None) -> str:
    """Validate an engine request against the backend and the spec (before anything trains)."""
    if engine is None:
        return default_engine(backend, spec, model)
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; use one of {ENGINES}")
    if engine == "scan" and backend != "jax":
        raise ConfigError(f"--engine scan needs the JAX backend (this run uses {backend}); use --backend jax or --engine fit")
    if engine == "scan" and spec.probe_every_steps:
        raise ConfigError("--engine scan runs whole epochs as one program and cannot probe every N steps; "
                          "use --engine fit for specs with probe_every_steps")
    return engine


class FitEngine:
    """``model.fit`` for one epoch over the training split in the given order."""

    name = "fit"

    def __init__(self, model, x, y, batch_size: int, own_batches: bool | None = None):
        """``own_batches``: feed :func:`tf_batches` instead of the arrays; default on TensorFlow only (False gives
        ``fit`` the arrays, as a user's call would: tests and benchmarks/tf_input.py compare the two)."""
        import keras

        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.own_batches = keras.backend.backend() == "tensorflow" if own_batches is None else own_batches

    def train_epoch(self, order: np.ndarray, epoch: int, callbacks=()) -> dict:
        x, y = self.x[order], self.y[order]
        if self.own_batches:  # the same batches in the same order, fed without tf.data's autotuning
            data = dict(x=tf_batches(x, y, self.batch_size))
        else:
            data = dict(x=x, y=y, batch_size=self.batch_size)
        hist = self.model.fit(**data, epochs=epoch, initial_epoch=epoch - 1, shuffle=False, verbose=0,
                              callbacks=list(callbacks))
        return {k: float(v[-1]) for k, v in hist.history.items()}

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode logits in fixed-size chunks through Keras' compiled predict step."""
        return np.concatenate([np.asarray(self.model.predict_on_batch(x[i : i + EVAL_BATCH]), dtype=np.float64)
                               for i in range(0, len(x), EVAL_BATCH)])


def tf_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """TensorFlow: the arrays as consecutive batches (the last one partial), one batch prefetched, tf.data's
    autotuning off.

    What ``fit`` builds from arrays itself is the same batches with an autotuned prefetch; on this project's
    2-core CPU its background threads took a core from training in about half the epochs (docs/performance.md,
    "The TensorFlow input pipeline"). Execution only: the optimizer sees the same batches, so results do not
    change (tests/test_engines.py).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(1).with_options(options)


def build_training_state(model, x, y) -> None:
    """Create every variable a pure ``train_step`` threads through (the model's, the compiled loss's and metrics',
    the optimizer's) with public calls on one batch, leaving the metrics reset and the weights untouched: what
    ``fit`` does before its first step (through a private Keras method that the engines do not call)."""
    y_pred = model(x, training=False)
    model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
    model.compute_metrics(x, y, y_pred)
    model.reset_metrics()
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


class ScanEngine:
    """JAX: each epoch one compiled ``lax.scan`` over Keras' pure ``train_step``, the data on the device."""

    name = "scan"

    def __init__(self, model, x, y, batch_size: int):
        import jax
        import jax.numpy as jnp

        self.model, self.batch_size = model, batch_size
        self._host, self._device = (x, y), None
        build_training_state(model, x[:batch_size], y[:batch_size])

        def one_step(state, x, y, idx):
            _, state = model.train_step(state, (jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)))
            return state

        def many_steps(state, x, y, idx):
            def body(carry, i):
                return one_step(carry, x, y, i), None

            return jax.lax.scan(body, state, idx)[0]

        def forward(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        # the state is donated: XLA writes the new weights and optimizer slots over the old ones instead of
        # holding two copies; the old arrays are dead from the call on, and train_epoch assigns the new ones
        self._one = jax.jit(one_step, donate_argnums=0)
        self._many = jax.jit(many_steps, donate_argnums=0)
        self._forward = jax.jit(forward)
        self._device_sets: dict[int, tuple] = {}

    def device_data(self):
        """The training split on the device, moved there when first trained on (the runs of a seeds-together
        group train on the first run's copy, so the others never move theirs)."""
        import jax.numpy as jnp

        if self._device is None:
            self._device = tuple(jnp.asarray(a) for a in self._host)
        return self._device

    def state(self):
        """The model's training state as ``train_step`` takes it: (trainable, non-trainable, optimizer, metrics)
        variable values, in Keras' variable order (also stacked by :mod:`normbench.together`)."""
        m = self.model
        return ([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
                [v.value for v in m.optimizer.variables], [v.value for v in m.metrics_variables])

    def assign_state(self, state) -> None:
        """Put a state of :meth:`state`'s layout back into the model's variables."""
        m = self.model
        for refs, values in zip((m.trainable_variables, m.non_trainable_variables, m.optimizer.variables,
                                 m.metrics_variables), state):
            for ref, value in zip(refs, values):
                ref.assign(value)

    def train_epoch(self, order: np.ndarray, epoch: int, callbacks=()) -> dict:
        import jax.numpy as jnp

        if callbacks:
            raise ConfigError("the scan engine takes no per-step callbacks")
        self.model.reset_metrics()
        state = self.state()
        x, y = self.device_data()
        full = len(order) // self.batch_size
        if full:
            idx = jnp.asarray(order[: full * self.batch_size].reshape(full, self.batch_size))
            state = self._many(state, x, y, idx)
        if len(order) > full * self.batch_size:  # fit's last, partial batch
            state = self._one(state, x, y, jnp.asarray(order[full * self.batch_size :]))
        self.assign_state(state)
        return {k: float(v) for k, v in self.model.get_metrics_result().items()}

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Inference-mode logits by one compiled forward function over device-resident chunks."""
        import jax.numpy as jnp

        key = id(x)
        if key not in self._device_sets:  # the evaluation sets are fixed for a run: moved to the device once
            self._device_sets[key] = (x, [jnp.asarray(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
        m = self.model
        tv, ntv = [v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables]
        outs = [self._forward(tv, ntv, chunk) for chunk in self._device_sets[key][1]]
        return np.concatenate([np.asarray(o, dtype=np.float64) for o in outs])


def make_engine(name: str, model, x, y, batch_size: int):
    return {"fit": FitEngine, "scan": ScanEngine}[name](model, x, y, batch_size)
