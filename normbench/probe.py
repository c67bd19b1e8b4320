"""Probe a fixed batch for per-layer activation statistics, without changing the model.

The probe is a second functional model over the same layers whose outputs are the
input (pre-activation) and output (activation) of every hidden ``hNN_act`` layer and,
where a block closes a residual branch, the two inputs of its ``hNN_add`` (tapped as
``skip`` and ``branch``: the pre-activation is their sum), and the output of every
``hNN_concat`` that joins parallel branches (tapped as ``concat`` of block NN).
It runs with ``training=False`` through Keras' compiled predict function, built
once and reused, so batch-norm moving statistics and dropout are never touched.
"""

from __future__ import annotations

import re

import numpy as np

from .stats import kernel_norms, summarize, unit_summary

ACT_LAYER = re.compile(r"h(\d+)_act")


def hidden_blocks(model) -> list[tuple[int, object, object]]:
    """(index, activation layer, linear layer) for every hidden block, in depth order."""
    blocks = []
    for layer in model.layers:
        m = ACT_LAYER.fullmatch(layer.name)
        if m:
            index = int(m.group(1))
            blocks.append((index, layer, model.get_layer(f"h{index:02d}_linear")))
    return sorted(blocks, key=lambda b: b[0])


class ActivationProbe:
    """Measures tidy rows (epoch, layer, tap, quantity, value) on one fixed batch."""

    def __init__(self, model, x_probe: np.ndarray):
        import keras

        self.blocks = hidden_blocks(model)
        self.activations = [act.get_config()["activation"] for _, act, _ in self.blocks]  # fixed; not per epoch
        names = {layer.name for layer in model.layers}
        outputs = []
        self.taps: list[list[str]] = []  # per block, the names of its tapped tensors in output order
        for index, act, _ in self.blocks:
            outputs += [act.input, act.output]
            self.taps.append(["pre", "act"])
            if f"h{index:02d}_add" in names:
                skip, branch = model.get_layer(f"h{index:02d}_add").input
                outputs += [skip, branch]
                self.taps[-1] += ["skip", "branch"]
            if f"h{index:02d}_concat" in names:
                outputs.append(model.get_layer(f"h{index:02d}_concat").output)
                self.taps[-1].append("concat")
        self.model = model
        self.probe_model = keras.Model(model.input, outputs, name=f"{model.name}_probe")
        self.x = x_probe

    def measure(self, epoch: int) -> list[tuple[int, int, str, str, float]]:
        import keras

        values = iter(self.probe_model.predict_on_batch(self.x))
        rows = []
        for (index, _, linear), activation, taps in zip(self.blocks, self.activations, self.taps):
            for tap in taps:
                tensor = next(values)
                if tap == "pre":
                    summary = summarize(tensor) | unit_summary(tensor)
                else:
                    summary = summarize(tensor, activation if tap == "act" else None)
                rows += [(epoch, index, tap, q, v) for q, v in summary.items()]
            norms = kernel_norms(keras.ops.convert_to_numpy(linear.kernel))
            rows += [(epoch, index, "kernel", q, v) for q, v in norms.items()]
        return rows
