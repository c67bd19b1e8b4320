"""Execution settings (how a run is executed, not what it computes) and FLOP counting.

Settings here never change a run's math, so they are not part of the run id; they
are recorded in every record under ``performance``. Settings that do change results
(mixed precision) are run-spec fields instead.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

JIT_ENV = "NORMBENCH_JIT_COMPILE"  # auto | on | off
SPE_ENV = "NORMBENCH_STEPS_PER_EXECUTION"


@dataclass(frozen=True)
class Execution:
    """How Keras runs the training and evaluation steps."""

    jit_compile: bool  # XLA (TF), jax.jit (JAX; always on there), torch.compile (torch)
    steps_per_execution: int  # optimizer steps per call into the compiled function

    def as_dict(self) -> dict:
        return asdict(self)


def _has_bn(model) -> bool:
    return any(type(layer).__name__ == "BatchNormalization" for layer in model.layers)


def _is_conv(model) -> bool:
    return any(type(layer).__name__ == "Conv2D" for layer in model.layers)


def choose_execution(model, backend: str, deterministic: bool) -> Execution:
    """Defaults per backend and model family, from measurements on a 2-core CPU (benchmarks/throughput.py).

    - steps_per_execution 16 everywhere: fewer Python round trips per epoch.
    - TensorFlow: XLA only for MLPs without BN (issue #5 measured it helping deep MLPs, not BN or conv
      nets), and never with op determinism on, which Keras refuses to combine with XLA. Re-measured on
      2026-11-22 with op determinism off (one run each, 20k MNIST samples): XLA neither helped nor hurt
      the MLPs here (mlp8 30.7k vs 31.4k samples/s, mlp32 7.8k vs 8.4k), so the default (determinism
      on, no XLA) loses nothing measurable on this CPU.
    - JAX compiles every step anyway; torch stays eager (torch.compile's warm-up dominates short runs) and
      runs one step per execution, the only setting Keras accepts there.
    Environment overrides: NORMBENCH_JIT_COMPILE=auto|on|off, NORMBENCH_STEPS_PER_EXECUTION=N.
    """
    if backend == "tensorflow":
        jit = not deterministic and not _has_bn(model) and not _is_conv(model)
    else:
        jit = backend == "jax"
    override = os.environ.get(JIT_ENV, "auto").lower()
    if override in ("on", "1", "true"):
        jit = True
    elif override in ("off", "0", "false"):
        jit = False
    spe = max(1, int(os.environ.get(SPE_ENV, "16")))
    if backend == "torch":
        spe = 1  # Keras refuses steps_per_execution > 1 on torch ("must be 1 with the PyTorch backend")
    return Execution(jit_compile=jit, steps_per_execution=spe)


def forward_flops(model) -> int:
    """Multiply-add FLOPs (2 per MAC) of one sample's forward pass through Dense and Conv2D layers."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            total += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        elif kind == "Conv2D":
            kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
            oh, ow = (int(d) for d in layer.output.shape[1:3])
            total += 2 * kh * kw * cin * cout * oh * ow
    return total


def training_flops(model) -> int:
    """About three forward passes per sample for one training step (forward, two backward matmuls)."""
    return 3 * forward_flops(model)
