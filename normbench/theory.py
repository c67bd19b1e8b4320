"""Mean-field signal propagation: what a random network's activations should look like at initialization.

In a wide network with independent zero-mean weights, a unit's pre-activation z = sum_i w_i x_i + b
is close to Gaussian across units and samples, with second moment

    q = fan_in * E[w^2] * E[x^2] + E[b^2]

(the expectation over the weights of z^2, averaged over units), and the activation phi(z) then has
mean E[phi(z)] and second moment E[phi(z)^2] for z ~ N(0, q), which feed the next layer (Poole et
al. 2016; Schoenholz et al. 2017). Two cases have closed forms that the recursion reproduces:

- ReLU with He initialization (fan_in * E[w^2] = 2): E[relu(z)^2] = q / 2, so q is the same in every
  layer (He et al. 2015), and the activations have mean sqrt(q / (2 pi)) and variance q (1/2 - 1/(2 pi)).
- SELU with LeCun-normal initialization (fan_in * E[w^2] = 1): (mean, variance) = (0, 1) is the
  fixed point of the map, and it attracts (Klambauer et al. 2017, Theorem 1).

A BatchNormalization layer in inference mode at initialization (moving mean 0, variance 1) scales
each unit by gamma / sqrt(1 + epsilon): a factor on q. The moments are computed by quadrature on a
fine grid (the activations' kinks make Gauss-Hermite converge slowly), exact to about 1e-8.
"""

from __future__ import annotations

import math

import numpy as np

from .stats import SELU_ALPHA, SELU_LAMBDA

ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "selu": lambda z: SELU_LAMBDA * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0))),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "linear": lambda z: z,
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
}

_GRID = np.linspace(-12.0, 12.0, 48001)  # standard-normal quadrature nodes (trapezoid rule)
_WEIGHTS = np.exp(-0.5 * _GRID ** 2) / math.sqrt(2.0 * math.pi) * (_GRID[1] - _GRID[0])


def gaussian_moments(activation: str, q: float) -> tuple[float, float]:
    """E[phi(z)] and E[phi(z)^2] for z ~ N(0, q) (a KeyError for an activation without a map)."""
    phi = ACTIVATIONS[activation]
    values = phi(math.sqrt(max(q, 0.0)) * _GRID)
    return float(np.sum(_WEIGHTS * values)), float(np.sum(_WEIGHTS * values ** 2))


def propagate_chain(input_second_moment: float, steps) -> list[tuple[int, dict[str, float]]]:
    """Predicted moments through a chain of steps, from the second moment of the input values.

    ``steps``: ("linear", fan_in * E[w^2], E[b^2]), ("scale", E[c^2]) for a per-unit scaling,
    ("standardize", E[gamma^2 var / (var + eps)], E[beta^2]) for a batch norm whose statistics are the
    population's (each unit made zero-mean and unit-variance, then gamma and beta: the second moment
    no longer depends on the input's), or ("act", activation name, layer index). Returns, per activation step, its layer index and
    ``pre_m2`` (the second moment of its input, mean 0), ``act_mean`` and ``act_var``.
    """
    m2, gaussian, out = input_second_moment, False, []
    for kind, a, b in steps:
        if kind == "linear":
            m2, gaussian = a * m2 + b, True
        elif kind == "scale":
            m2 = a * m2
        elif kind == "standardize":
            m2 = a + b
        elif kind == "act":
            if not gaussian:
                raise ValueError("an activation must follow a linear layer in this recursion")
            mean, second = gaussian_moments(a, m2)
            out.append((b, {"pre_m2": m2, "act_mean": mean, "act_var": second - mean ** 2}))
            m2, gaussian = second, False
        else:
            raise ValueError(f"unknown step {kind!r}")
    return out
