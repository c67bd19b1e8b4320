"""The report's DataFrames of records: one row per run (:func:`runs_frame`) and one tidy long frame of every
metric and statistic (:func:`long_frame`).

Records come from :func:`normbench.reader.load_records`, normalized: every section these read is there. The
store writes records and never builds a frame; pandas is the report's.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from .. import record as rec_mod
from ..record import STATS_COLUMNS
from ..spec import RunSpec


def long_frame(records: list[dict]) -> pd.DataFrame:
    """One tidy long DataFrame of ``records``.

    Columns: run_id, dataset, model, strategy, seed, status, source, epoch, layer, tap,
    quantity, value. History metrics have ``tap == "metric"`` and no layer; test metrics
    have ``tap == "test"``; activation statistics carry their layer and tap
    (``pre``, ``act`` or ``kernel``).
    """
    rows = []
    for rec in records:
        s = rec["spec"]
        key = (rec["run_id"], s["dataset"], s["model"], s["strategy"], s["seed"], rec["status"], rec["data"].get("source"))
        for h in rec["history"]:
            rows += [(*key, h["epoch"], None, "metric", q, v) for q, v in h.items() if q != "epoch"]
        for q, v in rec_mod.test_metrics(rec).items():
            rows.append((*key, rec["history"][-1]["epoch"] if rec["history"] else None, None, "test", q, v))
        rows += [(*key, e, layer, tap, q, v) for e, layer, tap, q, v in rec["stats"]["rows"]]
    columns = ["run_id", "dataset", "model", "strategy", "seed", "status", "source", *STATS_COLUMNS]
    df = pd.DataFrame(rows, columns=columns)
    df["layer"] = df["layer"].astype("Int64")
    df["epoch"] = df["epoch"].astype("Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


def param_key(name: str, params: dict | None) -> str:
    """A display key that tells apart runs of one builder/strategy with other parameters: ``mlp[depth=3,width=32]``."""
    if not params:
        return name
    inner = ",".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in sorted(params.items()))
    return f"{name}[{inner}]"


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: identity, status, final metrics, cost and provenance.

    ``model`` and ``strategy`` include non-default parameters (``maxnorm[c=2.0]``), so that
    tables never pool runs of different configurations; ``builder`` and ``strategy_name`` are
    the bare names. A training setting that differs between runs of one (dataset, model,
    strategy), such as the batch size of a batch-size sweep, joins the strategy key too
    (``batchnorm[batch_size=8,learning_rate=0.00625]``): seeds are the only thing pooled.
    """
    rows = []
    for rec in records:
        s, hist, env = rec["spec"], rec_mod.history(rec), rec["environment"]
        last = rec_mod.final_row(rec)
        suite = rec_mod.suite(rec)
        epoch_s = [h["epoch_s"] for h in hist if h.get("epoch_s")]
        speed = [h["samples_per_s"] for h in rec_mod.steady(rec) if h.get("samples_per_s")]
        rows.append(
            {
                "run_id": rec["run_id"],
                "dataset": s["dataset"],
                "model": param_key(s["model"], s.get("model_params")),
                "builder": s["model"],
                # a tuning study's searched knobs are the setting's choice, not another configuration: the key
                # keeps the strategy's name (the chosen values are in the report's search section)
                "strategy": param_key(s["strategy"], _unsearched(s.get("strategy_params"), suite)),
                "strategy_name": s["strategy"],
                "strategy_params": s.get("strategy_params") or {},  # a spec field: absent or null when it has none
                "seed": s["seed"],
                "depth": len(rec["layers"]) or None,
                "status": rec["status"],
                "error": rec["error"],
                "diverged_epoch": rec["diverged_epoch"],
                "epochs": s["epochs"],
                "batch_size": s.get("batch_size"),
                "learning_rate": s.get("learning_rate"),
                "optimizer": s.get("optimizer"),
                "epochs_done": last.get("epoch", 0),
                "limit": s.get("limit"),
                "precision": s.get("precision", "float32"),
                "test_accuracy": rec_mod.test_metrics(rec).get("accuracy"),
                "test_loss": rec_mod.test_metrics(rec).get("loss"),
                "final_train_loss": last.get("train_loss"),
                "final_val_accuracy": last.get("val_accuracy"),
                "train_s": float(np.sum(epoch_s)) if epoch_s else None,
                "samples_per_s": float(np.median(speed)) if speed else None,
                "param_count": rec["param_count"],
                "source": rec["data"].get("source"),
                "backend": env.get("backend"),
                "device": env.get("device"),
                "engine": rec_mod.engine(rec),
                "concurrent_runs": rec_mod.concurrent_runs(rec),
                "suite": suite.get("name"),
                "definition_hash": suite.get("definition_hash"),
                "finished_at": rec["finished_at"],
            }
        )
    df = pd.DataFrame(rows)
    if len(df):
        # every spec setting, as comparable text (a field an older record lacks has its default): any that differs
        # between runs of one (dataset, model, strategy) joins the key, whatever it is (momentum, precision, ...)
        specs = [rec["spec"] for rec in records]
        settings = {f: [json.dumps(s.get(f, _spec_default(f)), sort_keys=True) for s in specs] for f in SETTING_FIELDS}
        keyed = pd.DataFrame({"dataset": df.dataset, "model": df.model, "strategy": df.strategy, **settings})
        groups = keyed.groupby(["dataset", "model", "strategy"])
        varying = [f for f in SETTING_FIELDS if groups[f].nunique(dropna=False).max() > 1]
        if varying:
            df["strategy"] = [param_key(row.strategy_name, {**row.strategy_params,
                                                            **{f: s.get(f, _spec_default(f)) for f in varying}})
                              for (_, row), s in zip(df.iterrows(), specs)]
    return df.drop(columns=["strategy_params"]) if len(df) else df


def _unsearched(params: dict | None, suite: dict) -> dict:
    """A final's strategy parameters without the knobs its search chose (``suite.chosen``)."""
    chosen = (suite.get("chosen") or {}).get("values") or {}
    searched = {k.split(".", 1)[1] for k in chosen if k.startswith("strategy_params.")}
    return {k: v for k, v in (params or {}).items() if k not in searched}


def _spec_default(name: str):
    field = RunSpec.__dataclass_fields__[name]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


# Training settings that may differ between runs of one (dataset, model, strategy): every RunSpec field but the
# run's identity and the parameters already in the model and strategy keys. Seeds are the only thing pooled.
SETTING_FIELDS = tuple(f for f in RunSpec.__dataclass_fields__
                       if f not in ("model", "strategy", "dataset", "seed", "model_params", "strategy_params"))
