"""Metrics of inference-mode logits, shared by the runner and the diagnostics (NumPy only, no backend)."""

from __future__ import annotations

import numpy as np


def loss_and_accuracy(logits, y) -> tuple[float, float]:
    """Mean cross-entropy (in float64) and accuracy of inference-mode logits.

    The engines produce the logits (Keras' compiled predict step in fixed-size chunks, or one
    compiled JAX forward function over device-resident chunks); this avoids the per-call
    set-up of ``model.evaluate``, which cost more than the forward pass on a few thousand samples.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    return loss, float((logits.argmax(axis=1) == y).mean())
