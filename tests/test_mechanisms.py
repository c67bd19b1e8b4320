"""What each normalization mechanism did (normbench.mechanisms), recorded by real tiny runs, and the report's
'Mechanisms' section and never_engaged flags (normbench.report.mechanisms)."""

import json
import math

import pytest

from normbench import pack, record
from normbench.builtins import load_builtins
from normbench.norms import BATCH_STATISTICS, get_strategy
from normbench.registry import NORMS
from normbench.report import mechanisms as report_mechanisms
from normbench.report import section as report_section
from normbench.runner import run
from normbench.spec import RunSpec

from _tiny import quiet, tiny

load_builtins()
MODEL = {"depth": 2, "width": 16}
_RUNS: dict = {}


@pytest.fixture
def run_of(data_dir):
    """The record (as a reader reads it) of a tiny one-epoch MLP run of a strategy; each run made once per module."""

    def get(strategy: str, **params) -> dict:
        key = (strategy, json.dumps(params, sort_keys=True))
        if key not in _RUNS:
            spec = RunSpec("mlp", strategy, "mnist", strategy_params=params, model_params=MODEL, **tiny())
            rec = run(spec, data_dir=data_dir, log=quiet)
            assert rec["status"] == "ok", rec.get("error")
            _RUNS[key] = record.normalized(json.loads(json.dumps(record.clean(rec))))  # the layout check included
        return _RUNS[key]

    return get


def rows(rec: dict, mechanism: str, quantity: str, layer: str | None = None) -> dict[int, float]:
    """epoch -> value of one quantity (of the network, unless ``layer`` is given)."""
    layer = layer or report_mechanisms.NETWORK
    return {e: v for e, lay, m, q, v in rec["mechanisms"]["rows"] if (lay, m, q) == (layer, mechanism, quantity)}


def mechanisms_of(rec: dict) -> set[str]:
    return {row[2] for row in rec["mechanisms"]["rows"]}


@pytest.mark.parametrize("name", list(NORMS))
def test_every_strategy_records_its_mechanisms_and_only_those(run_of, name):
    rec = run_of(name)
    s = get_strategy(name)
    expected = ({"max_norm"} if s.max_norm else set()) | ({"agc"} if s.agc_clip is not None else set()) \
        | ({"pointwise"} if s.norm in ("dyt", "derf") else set()) | ({"batch_norm"} if s.norm in BATCH_STATISTICS else set())
    assert mechanisms_of(rec) == expected
    assert {row[0] for row in rec["mechanisms"]["rows"]} == ({0, 1} if expected else set())  # every epoch, init too
    assert all(v is not None and math.isfinite(v) for *_, v in rec["mechanisms"]["rows"])
    assert ("mechanisms_s" in rec["timings"]) == bool(expected)


def test_a_plain_network_records_no_mechanism(run_of):
    rec = run_of("none")
    assert rec["mechanisms"] == {"columns": record.MECHANISM_COLUMNS, "rows": []}
    assert report_mechanisms.never_engaged([rec]) == {}


def test_max_norm_binds_at_a_small_radius_and_is_flagged_when_it_never_does(run_of):
    small, large = run_of("maxnorm", c=0.5), run_of("maxnorm", c=100.0)
    assert rows(small, "max_norm", "at_radius")[1] > 0.5  # He-initialized 784-input units have norm ~1.4
    assert rows(small, "max_norm", "norm_max_over_c")[1] == pytest.approx(1.0, abs=1e-3)
    assert rows(small, "max_norm", "at_radius", "h00_linear")[1] > 0  # per constrained layer too
    assert set(rows(large, "max_norm", "at_radius").values()) == {0.0}
    largest = max(rows(large, "max_norm", "norm_max_over_c").values())
    assert 0 < largest < 0.1
    flags = report_mechanisms.never_engaged([small, large])
    assert len(flags) == 1
    (dataset, model, strategy), sentence = next(iter(flags.items()))
    assert (dataset, strategy) == ("mnist", "maxnorm[c=100.0]")
    assert sentence.startswith(f"max-norm never bound (largest unit norm {largest:.2f} c)")


def test_agc_with_a_tiny_clip_clips_and_a_huge_one_never_does(run_of):
    tight, loose = run_of("nf", clip=1e-4), run_of("nf", clip=1e6)
    assert all(v > 0 for v in rows(tight, "agc", "clipped").values()) and len(rows(tight, "agc", "clipped")) == 2
    assert rows(tight, "agc", "ratio_median")[1] > 1
    assert "logits" not in {row[1] for row in tight["mechanisms"]["rows"]}  # the classifier is not clipped
    assert set(rows(loose, "agc", "clipped").values()) == {0.0}
    flags = report_mechanisms.never_engaged([tight, loose])
    assert [k[2] for k in flags] == ["nf[clip=1000000.0]"] and flags[next(iter(flags))].startswith("AGC never clipped")


def test_dyt_alpha_is_recorded_and_learned(run_of):
    rec = run_of("dyt")
    for layer in ("h00_norm", "h01_norm"):
        alpha = rows(rec, "pointwise", "alpha", layer)
        assert alpha[0] == 0.5 and abs(alpha[1] - 0.5) > 1e-6
        assert 0 <= rows(rec, "pointwise", "squashed", layer)[1] <= 1
    assert rows(run_of("derf"), "pointwise", "shift", "h00_norm")[0] == 0.0  # Derf's shift too


def test_batch_norm_records_the_gap_between_moving_and_reestimated_statistics(run_of, data_dir):
    rec = run_of("batchnorm")
    for q in ("mean_gap", "var_log_ratio"):
        per_layer = rows(rec, "batch_norm", q, "h00_norm")
        assert set(per_layer) == {0, 1} and all(v > 0 for v in per_layer.values())  # moving stats start at (0, 1)
    assert rows(run_of("weightnorm_meanbn"), "batch_norm", "mean_abs_gap")  # mean-only BN keeps no variance
    assert report_mechanisms.never_engaged([rec]) == {}  # batch norm always normalizes
    # evaluated with the moving statistics (no re-estimate): no gap to measure
    spec = RunSpec("mlp", "batchnorm", "mnist", model_params=MODEL, **tiny(precise_bn_batches=0))
    assert run(spec, data_dir=data_dir, log=quiet)["mechanisms"]["rows"] == []


def test_older_records_read_with_an_empty_section_and_bad_rows_are_refused(run_of):
    rec = run_of("maxnorm", c=0.5)
    older = {k: v for k, v in rec.items() if k != "mechanisms"}
    assert record.normalized(older)["mechanisms"] == {"columns": record.MECHANISM_COLUMNS, "rows": []}
    for bad in ([[0, 1, "max_norm", "at_radius", 0.5]], [[0.5, "all", "max_norm", "at_radius", 0.5]],
                [[0, "all", "max_norm", "at_radius", "x"]], [[7, "all", "max_norm", "at_radius", 0.5]]):
        with pytest.raises(record.LayoutError) as e:
            record.check_layout({**rec, "mechanisms": {"columns": record.MECHANISM_COLUMNS, "rows": bad}})
        assert e.value.section == "mechanisms"


def test_a_pack_keeps_the_section(run_of, tmp_path):
    recs = [run_of("maxnorm", c=0.5), run_of("none")]
    pack.pack(recs, tmp_path)
    read, bad = pack.read(tmp_path)
    assert bad == [] and {r["run_id"]: r["mechanisms"] for r in read} == {r["run_id"]: r["mechanisms"] for r in recs}


def test_report_section_shows_init_and_end_and_the_flags(run_of, tmp_path):
    from normbench.report.frames import runs_frame

    recs = [run_of("maxnorm", c=0.5), run_of("maxnorm", c=100.0), run_of("dyt"), run_of("none")]
    (tmp_path / "tables").mkdir()
    md: list[str] = []
    report_mechanisms.section(recs, runs_frame(recs), tmp_path, md, report_section)
    text = "\n".join(md)
    assert "## Mechanisms" in text and "cannot be made" not in text
    assert "max-norm: units at the radius" in text and "DyT/Derf: alpha (mean over layers)" in text
    assert "maxnorm[c=100.0]: max-norm never bound" in text
    table = report_mechanisms.summary(report_mechanisms.frame(recs))
    dyt = table[(table.strategy == "dyt") & (table.quantity.str.contains("alpha"))].iloc[0]
    assert dyt.init == 0.5 and dyt.end != 0.5 and dyt.runs == 1
    assert (tmp_path / "tables" / "mechanisms.csv").is_file() and (tmp_path / "tables" / "mechanisms_layers.csv").is_file()
    md = []
    report_mechanisms.section([run_of("none")], runs_frame([run_of("none")]), tmp_path, md, report_section)
    assert md == []  # no record with mechanisms rows: no section
