"""Execution settings: how a run is executed, not what it computes.

Settings here never change a run's math, so they are not part of the run id; they are recorded
in every record under ``performance``. Settings that do change results (mixed precision) are
run-spec fields instead. FLOP counting is :mod:`normbench.flops`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .env import jit_override, steps_per_execution


@dataclass(frozen=True)
class Execution:
    """How Keras runs the training and evaluation steps."""

    jit_compile: bool  # XLA (TF), jax.jit (JAX; always on there), torch.compile (torch)
    steps_per_execution: int  # optimizer steps per call into the compiled function

    def as_dict(self) -> dict:
        return asdict(self)


def _has_bn(model) -> bool:
    return any(type(layer).__name__ == "BatchNormalization" for layer in model.layers)


def is_conv(model) -> bool:
    from .layers import linear_kind

    return any(linear_kind(layer) == "Conv2D" for layer in model.layers)


def choose_execution(model, backend: str, deterministic: bool) -> Execution:
    """Defaults per backend and model family, from measurements on a 2-core CPU (benchmarks/throughput.py).

    - steps_per_execution 16 everywhere: fewer Python round trips per epoch.
    - TensorFlow: XLA only for MLPs without BN (issue #5 measured it helping deep MLPs, not BN or conv
      nets), and never with op determinism on, which Keras refuses to combine with XLA. A later
      re-measurement found XLA neither helping nor hurting the MLPs on a 2-core CPU, so the default
      (determinism on, no XLA) loses nothing measurable there (numbers: results/perf.md, "Numbers moved
      out of docstrings").
    - JAX compiles every step anyway; torch stays eager (torch.compile's warm-up dominates short runs) and
      runs one step per execution, the only setting Keras accepts there.
    Environment overrides: NORMBENCH_JIT_COMPILE=auto|on|off, NORMBENCH_STEPS_PER_EXECUTION=N.
    """
    if backend == "tensorflow":
        jit = not deterministic and not _has_bn(model) and not is_conv(model)
    else:
        jit = backend == "jax"
    override = jit_override()  # the environment's one parser, also behind the pre-flight check
    if override is not None:
        jit = override
    spe = steps_per_execution()
    if backend == "torch":
        spe = 1  # Keras refuses steps_per_execution > 1 on torch ("must be 1 with the PyTorch backend")
    return Execution(jit_compile=jit, steps_per_execution=spe)
