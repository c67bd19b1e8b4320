"""Probe a fixed batch for per-layer activation statistics, without changing the model.

The probe is a second functional model over the same layers whose outputs are the
input (pre-activation) and output (activation) of every hidden ``hNN_act`` layer.
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
        outputs = []
        for _, act, _ in self.blocks:
            outputs += [act.input, act.output]
        self.model = model
        self.probe_model = keras.Model(model.input, outputs, name=f"{model.name}_probe")
        self.x = x_probe

    def measure(self, epoch: int) -> list[tuple[int, int, str, str, float]]:
        import keras

        taps = self.probe_model.predict_on_batch(self.x)
        rows = []
        for (index, _, linear), activation, pre, out in zip(self.blocks, self.activations, taps[0::2], taps[1::2]):
            for tap, values in (("pre", summarize(pre) | unit_summary(pre)), ("act", summarize(out, activation))):
                rows += [(epoch, index, tap, q, v) for q, v in values.items()]
            norms = kernel_norms(keras.ops.convert_to_numpy(linear.kernel))
            rows += [(epoch, index, "kernel", q, v) for q, v in norms.items()]
        return rows
