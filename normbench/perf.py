"""Execution settings (how a run is executed, not what it computes) and FLOP counting.

Settings here never change a run's math, so they are not part of the run id; they
are recorded in every record under ``performance``. Settings that do change results
(mixed precision) are run-spec fields instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .env import jit_override, steps_per_execution
from .models import build_model
from .norms import get_strategy


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


def forward_flops(model) -> int:
    """Multiply-add FLOPs (2 per MAC) of one sample's forward pass through Dense and Conv2D layers."""
    from .layers import linear_kind

    total = 0
    for layer in model.layers:
        kind = linear_kind(layer)
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


# Shapes a dataset's samples have and how many training images it holds, known without loading it.
DATASET_SHAPES = {"mnist": ((28, 28, 1), 60000, 10), "mnist_binary": ((28, 28, 1), 60000, 10),
                  "cifar10": ((32, 32, 3), 50000, 10)}


def run_costs(specs) -> dict[str, float]:
    """Estimated FLOPs of each run (training plus its per-epoch inference passes), by run id.

    Each distinct (model, dataset, model parameters) is built once from the model registry, with the
    plain strategy, to count its FLOPs per sample (a cost is known above the runner, never through it); a run's training samples follow from its limit and validation split. A
    dataset or model it cannot size gets the mean of the others (so an ETA still comes out).
    """
    import keras

    per_sample: dict[tuple, tuple[int, int]] = {}
    costs: dict[str, float] = {}
    for spec in specs:
        if spec.dataset not in DATASET_SHAPES:
            continue
        shape, n_total, classes = DATASET_SHAPES[spec.dataset]
        key = (spec.model, spec.dataset, json.dumps(spec.model_params, sort_keys=True))
        if key not in per_sample:
            try:
                keras.backend.clear_session()
                model = build_model(spec.model, shape, classes, get_strategy("none"), **spec.model_params)
                per_sample[key] = (training_flops(model), forward_flops(model))
            except Exception:  # noqa: BLE001  (an estimate only; the run itself reports its error)
                continue
        train, forward = per_sample[key]
        n = min(spec.limit or n_total, n_total - spec.val_size)
        evaluated = spec.train_eval_size + min(spec.eval_limit or spec.val_size, spec.val_size) + spec.probe_size
        costs[spec.run_id] = float(spec.epochs * (train * n + forward * evaluated) + forward * evaluated)
    if costs:
        mean = sum(costs.values()) / len(costs)
        for spec in specs:
            costs.setdefault(spec.run_id, mean)
    keras.backend.clear_session()
    return costs
