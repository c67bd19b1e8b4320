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

import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .env import probe_on_device_override
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


@functools.cache
def _summary_pool() -> ThreadPoolExecutor:
    """The threads the host summarizes taps on, made on first use and kept for the process."""
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="probe")


# a forked child has none of the parent's threads: it makes its own pool
os.register_at_fork(after_in_child=_summary_pool.cache_clear)


def statistics_on_device(device_kind: str) -> bool:
    """Where the probe summarizes its taps: with the backend's ops inside the probe's compiled function
    (:mod:`normbench.device_stats`) on a GPU, in NumPy on the host on a CPU.

    Measured on a 2-core CPU (``make overhead``; results/perf.md, "Probe statistics"): NumPy was as fast or faster
    on every model and backend there (mlp8 on JAX 0.028 s a probe against 0.107 s; the convnet 0.175 s against
    0.214 s on JAX, 0.115 s against 0.110 s on TensorFlow): the percentiles' sorts run 2-10x slower in the backends'
    CPU kernels than NumPy's partition. On a GPU the sorts are the device's and only a few numbers per tap cross to
    the host; that is unmeasured so far (docs/gpu.md). NORMBENCH_PROBE_ON_DEVICE=on|off overrides the choice; both
    give the same numbers up to float32 round-off (tests/test_probe.py)."""
    override = probe_on_device_override()
    return device_kind == "gpu" if override is None else override


class ActivationProbe:
    """Measures tidy rows (epoch, layer, tap, quantity, value) on one fixed batch.

    With ``on_device`` each tapped tensor is summarized by a :class:`normbench.device_stats.TapSummary`
    appended to the probe model, so one compiled ``predict_on_batch`` returns a few numbers per tap;
    otherwise the taps come back whole and :mod:`normbench.stats` summarizes them in NumPy. The kernels'
    per-unit norms (weights, not activations) are computed on the host either way.
    """

    def __init__(self, model, x_probe: np.ndarray, on_device: bool = False):
        import keras

        from .device_stats import TapSummary, summary_names

        self.blocks = hidden_blocks(model)
        self.on_device = bool(on_device)
        names = {layer.name for layer in model.layers}
        outputs = []
        # per block: (tap, the activation it is judged by for saturation, its quantities) in output order
        self.taps: list[list[tuple[str, str | None, list[str]]]] = []

        def tap(name: str, index: int, tensor, activation: str | None = None) -> None:
            pre = name == "pre"
            if self.on_device:
                tensor = TapSummary(len(x_probe), activation, pre, name=f"h{index:02d}_{name}_summary")(tensor)
            outputs.append(tensor)
            self.taps[-1].append((name, activation, summary_names(activation, pre)))

        for index, act, _ in self.blocks:
            self.taps.append([])
            tap("pre", index, act.input)
            tap("act", index, act.output, act.get_config()["activation"])  # fixed; not per epoch
            if f"h{index:02d}_add" in names:
                skip, branch = model.get_layer(f"h{index:02d}_add").input
                tap("skip", index, skip)
                tap("branch", index, branch)
            if f"h{index:02d}_concat" in names:
                tap("concat", index, model.get_layer(f"h{index:02d}_concat").output)
        self.model = model
        self.probe_model = keras.Model(model.input, outputs, name=f"{model.name}_probe")
        self.x = x_probe

    def _summary(self, tap: str, activation: str | None, quantities: list[str], value) -> list[float]:
        if self.on_device:
            return np.asarray(value, dtype=np.float64).reshape(-1).tolist()
        summary = summarize(value, activation) | (unit_summary(value) if tap == "pre" else {})
        return [summary[q] for q in quantities]

    def measure(self, epoch: int) -> list[tuple[int, int, str, str, float]]:
        import keras

        values = self.probe_model.predict_on_batch(self.x)
        jobs = [(tap, activation, quantities) for taps in self.taps for tap, activation, quantities in taps]
        # the taps are independent and NumPy's partition and reductions release the GIL: summarized on a few
        # threads (on the 2-core CPU, 16 mlp8 taps in 14 ms instead of 20 ms); the numbers do not depend on it
        summaries = iter(_summary_pool().map(lambda job, value: self._summary(*job, value), jobs, values))
        rows = []
        for (index, _, linear), taps in zip(self.blocks, self.taps):
            for (tap, _activation, quantities), summary in zip(taps, summaries):
                rows += [(epoch, index, tap, q, float(v)) for q, v in zip(quantities, summary)]
            norms = kernel_norms(keras.ops.convert_to_numpy(linear.kernel))
            rows += [(epoch, index, "kernel", q, v) for q, v in norms.items()]
        return rows
