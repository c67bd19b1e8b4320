"""A reader's numbers against a published pack's (make bench's last step): inside or outside each cell's interval."""

import math

import pytest
from scipy import stats

from normbench.errors import NormbenchError
from normbench.report import published

SEARCH = {"learning_rate": [0.01, 0.03, 0.1], "trial_seeds": [100, 101, 102], "knobs": True, "budget": 9}


def _final(strategy, seed, acc, lr=0.03, params=None, search=SEARCH, status="ok"):
    spec = {"dataset": "mnist", "model": "mlp8", "strategy": strategy, "seed": seed, "learning_rate": lr,
            "strategy_params": params or {}}
    return {"spec": spec, "status": status, "test": {"accuracy": acc, "loss": 0.1} if status == "ok" else None,
            "suite": {"name": "bench", "phase": "final", "search": search}}


PUBLISHED = ([_final("batchnorm", s, a) for s, a in enumerate([0.950, 0.952, 0.951, 0.953, 0.949])]
             + [_final("maxnorm", s, a, params={"c": 1.5}) for s, a in enumerate([0.940, 0.941, 0.942, 0.939, 0.943])]
             + [_final("trial-only", 100, 0.5) | {"suite": {"phase": "trial", "search": SEARCH}}])


def test_each_cell_is_inside_or_outside_the_published_interval():
    mine = ([_final("batchnorm", s, a) for s, a in enumerate([0.951, 0.9515])]
            + [_final("maxnorm", s, a, params={"c": 1.5}) for s, a in enumerate([0.930, 0.931])])
    table = published.compare(mine, PUBLISHED).set_index("strategy")
    acc = [0.950, 0.952, 0.951, 0.953, 0.949]
    half = stats.t.ppf(0.975, 4) * stats.tstd(acc) / math.sqrt(5)
    assert table.published_low["batchnorm"] == pytest.approx(0.951 - half)
    assert table.inside.to_dict() == {"batchnorm": True, "maxnorm": False}
    assert table.same_choice.all() and table.comparable.all() and table.published_n.tolist() == [5, 5]
    said = published.summary(table.reset_index(), "results/tuned/records")
    assert said.startswith("1 of 2 cells inside the published 95% intervals (results/tuned/records); outside: "
                           "mlp8 / maxnorm 0.9305 vs ")


def test_another_choice_another_search_or_no_cell_is_said_not_hidden():
    mine = ([_final("batchnorm", s, a, lr=0.1) for s, a in enumerate([0.951, 0.9515])]  # the search chose another lr
            + [_final("maxnorm", s, 0.94, params={"c": 1.5}, search={**SEARCH, "budget": 15}) for s in range(2)]
            + [_final("selu", s, 0.94) for s in range(2)])
    table = published.compare(mine, PUBLISHED).set_index("strategy")
    assert not table.same_choice["batchnorm"] and "chose batchnorm@lr=0.1" in table.note["batchnorm"]
    assert table.note["maxnorm"] == "published under another search: not comparable" and not table.comparable["maxnorm"]
    assert table.note["selu"] == "no published cell"
    said = published.summary(table.reset_index(), "P")
    assert said.startswith("1 of 1 cells inside") and "1 chose other values than the published search" in said
    nothing = published.compare([_final("selu", 0, 0.9)], PUBLISHED)
    assert published.summary(nothing, "P") == "No cell of these records can be compared with P: no published cell."


def test_an_empty_published_folder_is_refused_naming_it(tmp_path):
    with pytest.raises(NormbenchError, match="holds no records: give the folder of a published pack"):
        published.load_published(tmp_path)


def test_the_bench_suite_trains_a_subset_of_the_published_tuned_study():
    """make bench compares its cells with results/tuned's: that holds only while its runs are tuned's runs."""
    from normbench.suites import get_suite

    bench, tuned = get_suite("bench"), get_suite("tuned")
    assert bench.search.as_dict() == tuned.search.as_dict() and bench.verdicts == tuned.verdicts
    assert {s.run_id for s in bench.search.trials(bench.specs)} <= {s.run_id for s in tuned.search.trials(tuned.specs)}
    assert {s.run_id for s in bench.specs} <= {s.run_id for s in tuned.specs}
    assert {s.strategy for s in bench.specs} == {"batchnorm", "maxnorm", "selu", "none"}


def test_the_same_search_in_another_key_order_is_the_same_search():
    """A pack gives a record's nested tables back with their keys in another order: still the same search."""
    reordered = {**{k: SEARCH[k] for k in reversed(list(SEARCH))}, "halving": {"epochs": 1, "eta": 3}}
    ordered = {**SEARCH, "halving": {"eta": 3, "epochs": 1}}
    mine = [_final("batchnorm", s, a, search=reordered) for s, a in enumerate([0.951, 0.9515])]
    theirs = [_final("batchnorm", s, a, search=ordered) for s, a in enumerate([0.950, 0.952, 0.951, 0.953, 0.949])]
    row = published.compare(mine, theirs).iloc[0]
    assert row.comparable and row.inside and row.note == ""

