"""Cross-check of the ``spectra`` diagnostic's power-law alpha against WeightWatcher.

Trains a few normbench models briefly on MNIST (the runner's own build and compile; default
mlp8 with no normalization, batch norm and SELU, 2 epochs on 20,000 images, the RunSpec
defaults otherwise: SGD, lr 0.01, momentum 0.9, batch 128), takes every hidden Dense kernel
(``hNN_linear``), and fits its spectrum twice:

* normbench: ``normbench.diagnostics.spectrum_summary`` (eigenvalues of W^T W / N, Clauset MLE,
  xmin by the KS distance on both sides of each empirical-CDF step, tails of >= 10 points);
* WeightWatcher: ``WeightWatcher(model).analyze()`` on a torch ``nn.Sequential`` of ``nn.Linear``
  layers holding the same matrices (torch stores (out, in), so each gets ``kernel.T``).

WeightWatcher's eigenvalues are those of W^T W, without the 1/N (its ``normalize`` step is off),
so its xmin is N times normbench's, where N = max(in, out); alpha and the KS distance are
invariant under that scaling, so the fits are comparable as they are. The script checks the
factor (WeightWatcher's lambda_max over normbench's largest eigenvalue) and reports xmin on
normbench's scale. To separate the estimator from the choice of xmin, it also evaluates
normbench's ``powerlaw_fit`` at WeightWatcher's xmin (the same MLE must give the same alpha),
and re-runs normbench's xmin scan under WeightWatcher's selection rule (KS distance on the lower
side of each step only, tails down to 2 points) to see whether that rule alone explains the xmins
that differ.

WeightWatcher options, passed explicitly so that a change of its defaults does not change this
check: ``pl_package="ww"`` (its own fitter, the 0.7.x default; ``"powerlaw"`` would use the
powerlaw package), ``fit="PL"``, ``fix_fingers=False`` (no xmin-peak or xmax clipping),
``xmax=None``, ``randomize=False``, ``mp_fit=False``, ``vectors=False``, ``detX=False``,
``plot=False`` (nothing is written), ``min_evals=8`` (layers with fewer eigenvalues are skipped;
every layer here has >= 256). Spectra of fewer than 20 eigenvalues would take WeightWatcher's
small-N path (a bias-corrected MLE with a different xmin objective); none do here.

WeightWatcher is not a normbench dependency. Install it outside the project environment, e.g.

    pip install --target /tmp/wwlib weightwatcher
    PYTHONPATH=/tmp/wwlib python benchmarks/weightwatcher_crosscheck.py [--data-dir DIR]
        [--models mlp8] [--strategies none,batchnorm,selu] [--epochs 2] [--limit 20000] [--threads 2]

(with ``--no-deps`` plus its imports scikit-learn, joblib, cloudpickle, threadpoolctl, narwhals,
safetensors, matplotlib-inline and traitlets, if its pinned dependencies would shadow the
environment's numpy). torch (the CPU wheel is enough) must be importable too.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HIDDEN = re.compile(r"h\d\d_linear$")
INSTALL_HINT = (
    "WeightWatcher is not installed (it is not a normbench dependency). Install it outside the "
    "project environment and put it on the path, e.g.\n"
    "    pip install --target /tmp/wwlib weightwatcher\n"
    "    PYTHONPATH=/tmp/wwlib python benchmarks/weightwatcher_crosscheck.py"
)
WW_OPTIONS = dict(pl_package="ww", fit="PL", fix_fingers=False, xmax=None, randomize=False, mp_fit=False,
                  vectors=False, detX=False, plot=False, min_evals=8)


def import_weightwatcher():
    """The weightwatcher and torch modules, or SystemExit saying how to get them."""
    try:
        import torch
    except ImportError as err:
        raise SystemExit(f"torch is needed to hand matrices to WeightWatcher ({err}); "
                         "pip install torch --index-url https://download.pytorch.org/whl/cpu") from None
    try:
        import weightwatcher
    except ImportError as err:
        raise SystemExit(f"{INSTALL_HINT}\n({err})") from None
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)  # its per-layer INFO/WARNING chatter
    return weightwatcher, torch


def limit_threads(threads: int) -> None:
    """Keep TensorFlow and torch to ``threads`` CPU threads each (call before either runs an op)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import torch

    torch.set_num_threads(threads)


def trained_kernels(model_name: str, strategy_name: str, epochs: int, limit: int, data_dir: str | None):
    """Train one spec with the runner's build and compile; its hidden Dense kernels (name -> (in, out) array)."""
    import keras
    import numpy as np

    from normbench.datasets import load_splits
    from normbench.layers import linear_kind
    from normbench.runner import build, compile_model
    from normbench.spec import RunSpec

    spec = RunSpec(model_name, strategy_name, "mnist", epochs=epochs, limit=limit)
    splits = load_splits(spec.dataset, input_scaling=spec.input_scaling, val_size=spec.val_size,
                         limit=spec.limit, data_dir=data_dir)
    keras.utils.set_random_seed(spec.seed)
    model, _ = build(spec, splits.input_shape, splits.num_classes, x_train=splits.x_train)
    compile_model(model, spec)
    t = time.perf_counter()
    model.fit(splits.x_train, splits.y_train, batch_size=spec.batch_size, epochs=spec.epochs, verbose=0)
    fit_s = time.perf_counter() - t
    _, val_acc = model.evaluate(splits.x_val, splits.y_val, batch_size=1024, verbose=0)
    kernels = {}
    for layer in model.layers:
        if HIDDEN.match(layer.name) and linear_kind(layer) == "Dense":
            kernels[layer.name] = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float32)
    return kernels, {"train": len(splits.y_train), "fit_s": fit_s, "val_acc": float(val_acc)}


def weightwatcher_fits(weightwatcher, torch, kernels: dict) -> dict:
    """WeightWatcher's analyze() on a torch Sequential of Linear layers holding ``kernels``: name -> row."""
    names = list(kernels)
    layers = []
    for name in names:
        k = kernels[name]
        linear = torch.nn.Linear(k.shape[0], k.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(k.T.copy()))  # torch's weight is (out, in)
            linear.bias.zero_()
        layers.append(linear)
    details = weightwatcher.WeightWatcher(model=torch.nn.Sequential(*layers)).analyze(**WW_OPTIONS)
    out = {}
    for _, row in details.iterrows():  # Sequential children are named "0", "1", ...
        out[names[int(row["longname"])]] = row
    return out


def lower_side_scan(eigs, min_tail: int = 2) -> dict:
    """normbench's xmin scan with WeightWatcher's selection rule: KS distance against the lower side of
    each empirical-CDF step only, candidate tails down to ``min_tail`` points."""
    import numpy as np

    x = np.sort(np.asarray(eigs, dtype=np.float64))
    x = x[x > 0]
    best = {"alpha": float("nan"), "xmin": float("nan"), "ks": float("inf")}
    logs = np.log(x)
    tail_log_sums = np.cumsum(logs[::-1])[::-1]
    for i in range(len(x) - min_tail + 1):
        n = len(x) - i
        spread = tail_log_sums[i] - n * logs[i]
        if spread <= 0:
            continue
        alpha = 1.0 + n / spread
        model_cdf = 1.0 - (x[i:] / x[i]) ** (1.0 - alpha)
        ks = float(np.abs(model_cdf - np.arange(n) / n).max())
        if ks < best["ks"]:
            best = {"alpha": float(alpha), "xmin": float(x[i]), "ks": ks}
    return best


def compare(kernels: dict, ww_rows: dict) -> list[dict]:
    """One row per kernel: normbench's fit, WeightWatcher's, normbench's MLE at WeightWatcher's xmin."""
    import numpy as np

    from normbench.diagnostics import matrix_of, powerlaw_fit, spectrum_summary

    rows = []
    for name, kernel in kernels.items():
        w = matrix_of(kernel)
        n = w.shape[0]
        eigs = np.sort(np.linalg.svd(w, compute_uv=False) ** 2 / n)  # what spectrum_summary fits
        nb = spectrum_summary(kernel)
        ww = ww_rows.get(name)
        row = {"layer": name, "shape": f"{kernel.shape[0]}x{kernel.shape[1]}", "N": n,
               "nb_alpha": nb["alpha"], "nb_xmin": nb["xmin"], "nb_tail": nb["n_tail"]}
        if ww is None or ww.get("status") != "success":
            row.update(ww_alpha=float("nan"), ww_xmin=float("nan"), ww_tail=-1, scale=float("nan"),
                       at_ww_alpha=float("nan"), at_ww_tail=-1, lower_xmin=float("nan"))
            rows.append(row)
            continue
        scale = float(ww["lambda_max"]) / float(eigs[-1])  # expected: N (WeightWatcher does not divide)
        ww_xmin = float(ww["xmin"]) / scale  # on normbench's scale
        # the normbench eigenvalue WeightWatcher's xmin is (the SVDs differ in the last digits)
        nearest = float(eigs[np.argmin(np.abs(eigs - ww_xmin))])
        at_ww = powerlaw_fit(eigs, min_tail=1, xmin=nearest)
        lower = lower_side_scan(eigs)
        row.update(ww_alpha=float(ww["alpha"]), ww_xmin=ww_xmin, ww_tail=int(ww["num_pl_spikes"]), scale=scale,
                   at_ww_alpha=at_ww["alpha"], at_ww_tail=at_ww["n_tail"], lower_xmin=lower["xmin"])
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder with mnist.npz (default: $NORMBENCH_DATA_DIR)")
    p.add_argument("--models", default="mlp8", help="comma-separated registered models (default mlp8)")
    p.add_argument("--strategies", default="none,batchnorm,selu", help="comma-separated strategies")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000, help="training images (class-balanced; default 20000)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for TensorFlow and torch (default 2)")
    args = p.parse_args()

    weightwatcher, torch = import_weightwatcher()  # fail before training if it is missing
    limit_threads(args.threads)
    import numpy as np

    from normbench.builtins import load_builtins
    from normbench.env import environment

    load_builtins()
    env = environment()
    print(f"backend {env['backend']} {env['backend_version']}, keras {env['keras']}, "
          f"weightwatcher {getattr(weightwatcher, '__version__', '?')}, torch {torch.__version__}")
    print("WeightWatcher analyze() options: " + ", ".join(f"{k}={v!r}" for k, v in WW_OPTIONS.items()))

    results = []
    for model_name in args.models.split(","):
        for strategy_name in args.strategies.split(","):
            kernels, info = trained_kernels(model_name, strategy_name, args.epochs, args.limit, args.data_dir)
            print(f"trained {model_name}/{strategy_name}: {info['train']} images, {args.epochs} epochs in "
                  f"{info['fit_s']:.1f} s, validation accuracy {info['val_acc']:.4f}")
            if not kernels:
                print(f"  no hidden Dense kernels in {model_name}; skipped")
                continue
            for row in compare(kernels, weightwatcher_fits(weightwatcher, torch, kernels)):
                results.append({"run": f"{model_name}/{strategy_name}", **row})

    print()
    print("xmin on normbench's scale (eigenvalues of W^T W / N); WeightWatcher's own xmin is N times larger.")
    print("tail: eigenvalues >= xmin; nb@wwxmin: normbench's powerlaw_fit at WeightWatcher's xmin, (-ww) its")
    print("difference from WeightWatcher's alpha; scale/N: WeightWatcher's eigenvalue scale over normbench's, over N")
    head = (f"{'model/strategy':<18}{'layer':<11}{'shape':>9}{'nb alpha':>10}{'nb xmin':>10}{'tail':>6}"
            f"{'ww alpha':>10}{'ww xmin':>10}{'tail':>6}{'nb-ww':>9}{'nb@wwxmin':>12}{'(-ww)':>10}{'scale/N':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['run']:<18}{r['layer']:<11}{r['shape']:>9}{r['nb_alpha']:>10.4f}{r['nb_xmin']:>10.5f}"
              f"{r['nb_tail']:>6d}{r['ww_alpha']:>10.4f}{r['ww_xmin']:>10.5f}{r['ww_tail']:>6d}"
              f"{r['nb_alpha'] - r['ww_alpha']:>+9.4f}{r['at_ww_alpha']:>12.4f}"
              f"{r['at_ww_alpha'] - r['ww_alpha']:>+10.1e}{r['scale'] / r['N']:>9.6f}")

    ok = [r for r in results if np.isfinite(r["ww_alpha"])]
    if not ok:
        print("\nno layer had a WeightWatcher fit")
        return
    diffs = [abs(r["nb_alpha"] - r["ww_alpha"]) for r in ok]
    same = [r for r in ok if r["nb_tail"] == r["ww_tail"]]
    rel_xmin = [r["nb_xmin"] / r["ww_xmin"] for r in ok]
    lower_match = sum(np.isclose(r["lower_xmin"], r["ww_xmin"], rtol=1e-6) for r in ok)
    print()
    print(f"layers compared: {len(ok)} of {len(results)}")
    print(f"median |alpha_nb - alpha_ww| = {statistics.median(diffs):.4f}  (mean {statistics.fmean(diffs):.4f}, "
          f"max {max(diffs):.4f})")
    print(f"same xmin (same tail) in {len(same)} of {len(ok)} layers; there max |alpha difference| = "
          f"{max((abs(r['nb_alpha'] - r['ww_alpha']) for r in same), default=float('nan')):.2e}")
    print(f"xmin_nb / xmin_ww: median {statistics.median(rel_xmin):.3f}, range {min(rel_xmin):.3f} .. "
          f"{max(rel_xmin):.3f}; tails nb median {statistics.median(r['nb_tail'] for r in ok):.0f}, "
          f"ww median {statistics.median(r['ww_tail'] for r in ok):.0f} eigenvalues")
    print(f"normbench's MLE at WeightWatcher's xmin: max |alpha - alpha_ww| = "
          f"{max(abs(r['at_ww_alpha'] - r['ww_alpha']) for r in ok):.2e}, tails equal in "
          f"{sum(r['at_ww_tail'] == r['ww_tail'] for r in ok)} of {len(ok)}")
    print(f"normbench's scan with WeightWatcher's rule (lower-side KS, tails >= 2) picks WeightWatcher's xmin "
          f"in {lower_match} of {len(ok)} layers")
    print(f"eigenvalue scale WeightWatcher / normbench = N in every layer: "
          f"{all(np.isclose(r['scale'], r['N'], rtol=1e-5) for r in ok)}")


if __name__ == "__main__":
    main()
