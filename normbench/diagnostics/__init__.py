"""Opt-in measurements that explain a run, registered in ``DIAGNOSTICS``: one module per diagnostic.

A diagnostic is a function ``(model, context) -> rows`` of ``(layer, quantity, value)`` (or
``{"rows": rows, "tables": {section: table}}``), run when a spec names it in ``diagnostics``; the runner
records the rows with the epoch and the seconds each diagnostic cost. ``context`` holds the probe batch
(``x``, ``y``), the training data (``x_train``, ``y_train``), the compiled forward pass (``logits``) and the
run's ``seed``. Diagnostics read the model and never train it.

Each module registers its diagnostic with :func:`normbench.diagnostics.base.register`, declaring when it runs,
the record sections it writes and its report section; record, pack, report and the CLI read those
declarations, so a new diagnostic is one new module here (importing this package imports every module in it):

- :mod:`.spectra`: weight spectra (power-law alpha, spectral norm, stable rank, Marchenko-Pastur spikes);
- :mod:`.gradients`: gradient flow (kernel- and input-gradient norms per layer);
- :mod:`.sharpness`: the loss Hessian's top eigenvalue and trace;
- :mod:`.landscape`: loss-landscape slices at the end of a run;
- :mod:`.meanfield`: mean-field signal propagation at initialization.

Shared: :mod:`.base` (registration, the linear layers measured) and :mod:`.autodiff` (loss gradients and
Hessian-vector products, one module per Keras backend).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..registry import DIAGNOSTICS
from .base import NotApplicable, check_names, kernels, linear_layers, record_sections, register
from .gradients import kernel_gradients, loss_gradients
from .landscape import (LANDSCAPE_POINTS_1D, LANDSCAPE_POINTS_2D, LANDSCAPE_SAMPLES, LANDSCAPE_SPAN,
                        filter_normalized_direction, loss_surface)
from .sharpness import hessian_top_and_trace, hessian_vector_product
from .spectra import MIN_TAIL, matrix_of, powerlaw_fit, spectrum_summary

for _module in pkgutil.iter_modules(__path__):  # every diagnostic module registers itself on import
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DIAGNOSTICS", "LANDSCAPE_POINTS_1D", "LANDSCAPE_POINTS_2D", "LANDSCAPE_SAMPLES", "LANDSCAPE_SPAN", "MIN_TAIL",
           "NotApplicable", "check_names", "filter_normalized_direction", "hessian_top_and_trace",
           "hessian_vector_product", "kernel_gradients", "kernels", "linear_layers", "loss_gradients", "loss_surface",
           "matrix_of", "powerlaw_fit", "record_sections", "register", "spectrum_summary"]
