"""The autodiff the diagnostics share, one module per Keras backend (``tensorflow``, ``jax``, ``torch``).

Each backend module offers

- ``loss_gradients(model, x, y, loss_fn, kernels, offsets, shapes)``: the gradients of ``loss_fn(y, model(x))``
  (inference mode) with respect to each kernel variable of ``kernels`` and to each input offset of ``offsets``
  (a :class:`normbench.diagnostics.gradients.InputOffsets` whose ``values`` the backend fills with zero tensors
  of ``shapes`` it can differentiate), as NumPy arrays in that order;
- ``hessian_vector_product(model, x, y, loss_fn)``: a function v -> H v for the Hessian of that loss with respect
  to ``model.trainable_variables`` (v and H v: lists of NumPy arrays shaped like the variables).

:func:`for_backend` imports only the active backend's module, so that TensorFlow, JAX or torch is imported only
where it is the backend.
"""

from __future__ import annotations

import importlib

BACKENDS = ("tensorflow", "jax", "torch")


def for_backend(diagnostic: str):
    """The autodiff module of the active Keras backend; NotImplementedError (naming ``diagnostic``) for another."""
    import keras

    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise NotImplementedError(f"the {diagnostic} diagnostic supports {', '.join(BACKENDS[:-1])} and "
                                  f"{BACKENDS[-1]}, not {backend}")
    return importlib.import_module(f"{__name__}.{backend}")
