"""FLOP counting: a model's forward and training FLOPs per sample, and the estimated cost of runs (the grid's ETA)."""

from __future__ import annotations

import json

from .datasets import DATASET_FACTS
from .models import build_model
from .norms import get_strategy


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
        facts = DATASET_FACTS.get(spec.dataset)
        if facts is None:
            continue
        shape, n_total, classes = facts.shape, facts.train, facts.classes
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
