"""normbench check on records made by the real runner on tiny real data."""

import json
import shutil

import pytest

from normbench import check
from normbench.errors import ConfigError, NormbenchError
from normbench.norms import NormStrategy
from normbench.registry import NORMS
from normbench.grid import run_grid
from normbench.spec import RunSpec
from normbench.reader import record_filename
from normbench.suites import definition_hash

from _tiny import quiet, tiny

TINY = tiny(limit=200, eval_limit=200, val_size=200, probe_size=32, train_eval_size=200)
SPECS = [RunSpec("mlp", s, "mnist", model_params={"depth": 3, "width": 32}, **TINY) for s in ("none", "selu")]
SUITE = {"name": "tiny", "definition_hash": definition_hash(SPECS)}
RULES = "test_accuracy: -0.02\nfinal_train_loss: +10%\ninit activation std: 1e-4\ninit activation mean: 1e-4\n"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("baseline")
    run_grid(SPECS, out, data_dir=data_dir, suite=SUITE, log=quiet)
    (out / "rules.txt").write_text(RULES)
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit(folder, strategy, fn):
    for p in folder.glob(f"*-{strategy}-*.json"):
        rec = json.loads(p.read_text())
        fn(rec)
        p.write_text(json.dumps(rec))


def test_a_rerun_on_the_same_machine_is_identical(baseline, tmp_path, data_dir):
    current = tmp_path / "current"
    run_grid(SPECS, current, data_dir=data_dir, suite=SUITE, log=quiet)
    exact = tmp_path / "exact.txt"
    exact.write_text("test_accuracy: 0\nfinal_train_loss: 0\nfinal_val_accuracy: 0\ninit activation std: 0\n")
    lines = []
    assert check.run_check(baseline, current, exact, out=lines.append) == 0
    assert "0 worse, 0 improved" in lines[-1]


def test_planted_regression_fails_and_names_run_and_metric(baseline, tmp_path, data_dir, monkeypatch):
    # a real code regression: the selu bundle loses its activation (falls back to sigmoid)
    broken = lambda dropout_rate=0.0: NormStrategy("selu", activation="sigmoid", kernel_initializer="lecun_normal")  # noqa: E731
    monkeypatch.setitem(NORMS._items, "selu", broken)
    current = tmp_path / "current"
    run_grid(SPECS, current, data_dir=data_dir, suite=SUITE, log=quiet)
    lines = []
    assert check.run_check(baseline, current, out=lines.append) == 1
    text = "\n".join(lines)
    worse = [line for line in text.splitlines() if " worse " in f" {line} "]
    assert any("mnist/mlp/selu/seed0" in line and "init activation mean" in line for line in worse)
    assert not any("mnist/mlp/none/seed0" in line for line in worse)
    assert "REGRESSION" in text


def test_improvement_passes_and_is_shown(baseline, tmp_path):
    current = _copy(baseline, tmp_path / "current")
    _edit(current, "none", lambda r: r["test"].update(accuracy=r["test"]["accuracy"] + 0.1))
    lines = []
    assert check.run_check(baseline, current, out=lines.append) == 0
    row = next(line for line in lines[0].splitlines() if "mlp/none" in line and "test_accuracy" in line)
    assert "improved" in row and "test_accuracy: -0.02" in row


def test_mismatched_schema_suite_or_backend_is_refused(baseline, tmp_path):
    for i, (field, value) in enumerate((("schema_version", 99), ("suite", {**SUITE, "name": "other"}))):
        current = _copy(baseline, tmp_path / f"c{i}")
        _edit(current, "*", lambda r: r.__setitem__(field, value))
        with pytest.raises(NormbenchError, match="refusing to compare|schema version"):
            check.run_check(baseline, current, out=quiet)
    current = _copy(baseline, tmp_path / "c3")
    _edit(current, "*", lambda r: r["environment"].__setitem__("backend", "jax"))
    with pytest.raises(NormbenchError, match="refusing to compare: the baseline has backend 'tensorflow'.*make baseline"):
        check.run_check(baseline, current, out=quiet)


def _set_definition(folder, specs):
    _edit(folder, "*", lambda r: r.__setitem__("suite", {**SUITE, "definition_hash": definition_hash(specs)}))


def test_runs_of_a_strategy_the_baseline_lacks_are_listed_as_new_and_pass(baseline, tmp_path):
    """A strategy added to the suite changes its definition hash: the runs both sides have are still compared, and
    the added strategy's runs are new (listed and counted, not judged), not a reason to refuse the whole folder."""
    older = _copy(baseline, tmp_path / "older")  # the baseline of the suite before selu was added to it
    for p in older.glob("*-selu-*.json"):
        p.unlink()
    _set_definition(older, SPECS[:1])
    lines = []
    assert check.run_check(older, baseline, out=lines.append) == 0
    table = lines[0].splitlines()
    (new,) = [line for line in table if "mnist/mlp/selu/seed0" in line]
    assert " new " in f" {new} " and "not in the baseline" in new
    assert any("mnist/mlp/none/seed0" in line and "test_accuracy" in line and " same" in line for line in table)
    text = "\n".join(lines)
    assert "1 new runs" in text and "benchmark definition changed" in text and "REGRESSION" not in text


def test_a_changed_setting_of_a_baseline_run_is_still_caught(baseline, tmp_path):
    """A run whose settings changed has another run id (the hash of every setting): the baseline's run is missing
    (worse, exit 1) and the changed one new, though the suite's definition hash may now differ."""
    current = _copy(baseline, tmp_path / "current")
    changed = SPECS[1].with_(batch_size=64)
    for p in current.glob("*-selu-*.json"):
        rec = json.loads(p.read_text())
        rec.update(spec=changed.to_dict(), run_id=changed.run_id)
        p.unlink()
        (current / record_filename(changed)).write_text(json.dumps(rec))
    _set_definition(current, [SPECS[0], changed])
    lines = []
    assert check.run_check(baseline, current, out=lines.append) == 1
    table = lines[0].splitlines()
    (missing,) = [line for line in table if "missing" in line and "present" in line and "batch_size=32" in line]
    assert "mnist/mlp/selu/seed0" in missing and "worse" in missing
    assert any("batch_size=64" in line and " new " in f" {line} " for line in table)
    assert "REGRESSION" in "\n".join(lines)


def test_missing_run_is_reported_and_fails(baseline, tmp_path):
    current = _copy(baseline, tmp_path / "current")
    for p in current.glob("*-selu-*.json"):
        p.unlink()
    lines = []
    assert check.run_check(baseline, current, out=lines.append) == 1
    assert any("mnist/mlp/selu/seed0" in line and "missing" in line for line in lines[0].splitlines())


def test_status_change_is_a_regression(baseline, tmp_path):
    current = _copy(baseline, tmp_path / "current")
    _edit(current, "none", lambda r: r.update(status="diverged", test=None))
    lines = []
    assert check.run_check(baseline, current, out=lines.append) == 1
    assert any("status" in line and "diverged" in line and "worse" in line for line in lines[0].splitlines())


@pytest.mark.parametrize("text, message", [
    ("test_accuracy -0.02\n", "line 1: cannot parse 'test_accuracy -0.02'"),
    ("# comment\n\ntest_acc: -0.02\n", "line 3: unknown metric 'test_acc'"),
    ("final_train_loss: +ten%\n", "line 1: cannot parse"),
    ("# nothing\n", "has no rules"),
])
def test_malformed_rules_give_the_line(tmp_path, text, message):
    path = tmp_path / "rules.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        check.parse_rules(path)


def test_rule_semantics():
    acc, loss, std = [
        check.Rule("test_accuracy", 0.02, False, -1, "a"),
        check.Rule("final_train_loss", 0.10, True, 1, "b"),
        check.Rule("init activation std", 1e-4, False, 0, "c"),
    ]
    assert acc.judge(0.90, 0.885) == "same" and acc.judge(0.90, 0.87) == "worse" and acc.judge(0.90, 0.93) == "improved"
    assert loss.judge(1.0, 1.09) == "same" and loss.judge(1.0, 1.2) == "worse" and loss.judge(1.0, 0.8) == "improved"
    assert std.judge(1.0, 1.00005) == "same" and std.judge(1.0, 1.001) == "worse" and std.judge(1.0, 0.999) == "worse"
    assert loss.judge(1.0, float("nan")) == "worse"


def test_committed_baseline_rules_parse():
    from pathlib import Path

    rules = check.parse_rules(Path(__file__).resolve().parents[1] / "results" / "baseline" / "rules.txt")
    assert {r.metric for r in rules} >= {"test_accuracy", "init activation std"}


def test_a_scoped_rule_replaces_the_general_one_for_the_runs_it_names(baseline, tmp_path):
    current = _copy(baseline, tmp_path / "current")
    for strategy in ("none", "selu"):
        _edit(current, strategy, lambda r: r["test"].update(accuracy=r["test"]["accuracy"] - 0.1))
    rules = tmp_path / "rules.txt"
    rules.write_text(RULES + "[strategy=sel*] test_accuracy: -0.15   # measured: sensitive to round-off\n")
    lines = []
    assert check.run_check(baseline, current, rules, out=lines.append) == 1
    table = lines[0].splitlines()
    selu = next(line for line in table if "mlp/selu" in line and "test_accuracy" in line)
    none = next(line for line in table if "mlp/none" in line and "test_accuracy" in line)
    assert " same " in f" {selu} " and "worse" in none and "test_accuracy: -0.02" in none
    assert sum("test_accuracy" in line for line in table) == 2  # one rule per run and metric, not both


REFUSED_RULES = [
    # a bad scope names the line and the fields
    *[(text, "line 1: bad scope .*dataset, model, strategy") for text in
      ("[colour=red] test_accuracy: -0.1\n", "[model] test_accuracy: -0.1\n", "[] test_accuracy: -0.1\n")],
    # two rules for one metric and scope
    *[(text, "line 2: 'test_accuracy' already has a rule for these runs on line 1") for text in
      ("test_accuracy: -0.05\ntest_accuracy: -0.5\n",
       "[model=mlp8] test_accuracy: -0.05\n[model=mlp8] test_accuracy: -0.5\n")],
]


@pytest.mark.parametrize("text,message", REFUSED_RULES)
def test_a_rules_file_that_cannot_be_meant_is_refused_naming_the_line(tmp_path, text, message):
    path = tmp_path / "rules.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        check.parse_rules(path)


# --- through the command line, where a user meets them ---------------------------------------------------------

def _cli(capsys, *args):
    from normbench.cli import main

    rc = main(["check", *map(str, args)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def _rules(tmp_path, text, name="rules.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, line, held", [
    ("[model=mlp16] test_accuracy: -0.15\n", 1, "models: mlp"),  # the runs are 'mlp'
    ("test_accuracy: -0.02\n[model=MLP] test_accuracy: -0.15\n", 2, "models: mlp"),  # globs are case-sensitive
    ("test_accuracy: -0.02\n# widen\n[strategy=nomatch*] test_accuracy: -0.15\n", 3, "strategies: none, selu"),
    ("test_accuracy: -0.02\n[strategy=none,nomatch] test_accuracy: -0.15\n", 2, "'nomatch'"),  # a typo'd alternative
    ("test_accuracy: -0.02\n[model=mlp,dataset=cifar10] test_accuracy: -0.15\n", 2, "datasets: mnist"),
])
def test_a_scope_that_matches_no_baseline_run_is_an_error_naming_the_line(baseline, tmp_path, capsys, text, line, held):
    rc, out, err = _cli(capsys, "--baseline", baseline, "--current", baseline, "--rules", _rules(tmp_path, text))
    assert rc == 2
    assert f"line {line}: " in err and "matches no run in the baseline" in err
    assert held in err  # what the baseline does hold, to fix the pattern with
    assert "0 worse" not in out  # nothing was reported as checked


@pytest.mark.parametrize("scope", ["[strategy=none,selu]", "[strategy=none,strategy=selu]", "[strategy=none,sel*]"])
def test_alternatives_in_a_scope_mean_or(baseline, tmp_path, capsys, scope):
    current = _copy(baseline, tmp_path / "current")
    for strategy in ("none", "selu"):
        _edit(current, strategy, lambda r: r["test"].update(accuracy=r["test"]["accuracy"] - 0.1))
    rules = _rules(tmp_path, f"test_accuracy: -0.02\n{scope} test_accuracy: -0.15\n")
    rc, out, err = _cli(capsys, "--baseline", baseline, "--current", current, "--rules", rules)
    assert rc == 0, out + err
    rows = [line for line in out.splitlines() if line.startswith("mnist/") and "test_accuracy" in line]
    assert len(rows) == 2 and all(" same" in row for row in rows)


@pytest.mark.parametrize("text, quantity, valid", [
    ("init activation nosuchq: 1e-4\n", "nosuchq", "dead_units"),
    ("test_accuracy: -0.02\nfinal kernel std: 1e-4\n", "std", "norm_max, norm_mean"),  # kernels have norms only
])
def test_an_unknown_statistic_quantity_is_refused_with_the_valid_ones(baseline, tmp_path, capsys, text, quantity, valid):
    rc, out, err = _cli(capsys, "--baseline", baseline, "--current", baseline, "--rules", _rules(tmp_path, text))
    assert rc == 2
    assert f"line {text.count(chr(10))}: unknown quantity {quantity!r}" in err and valid in err
    assert out == ""


def test_a_rule_with_no_value_in_any_run_is_not_same_and_fails(baseline, tmp_path, capsys):
    # one-epoch runs have no steady-state epoch, so no s_per_epoch
    rules = _rules(tmp_path, "test_accuracy: -0.02\ns_per_epoch: +50%\n")
    rc, out, err = _cli(capsys, "--baseline", baseline, "--current", baseline, "--rules", rules)
    assert rc == 2
    rows = [line for line in out.splitlines() if "s_per_epoch" in line]
    assert len(rows) == 2 and not any(" same" in row for row in rows) and all("n/a" in row for row in rows)
    assert "2 same, 2 not comparable" in out  # the two test_accuracy rows are the only ones counted as same
    assert "line 2" in err and "s_per_epoch: +50%" in err and "compared no value" in err


def test_only_rules_for_other_runs_fail_rather_than_pass_on_nothing(baseline, tmp_path, capsys):
    rules = _rules(tmp_path, "[model=mlp16] test_accuracy: -0.15\n")
    rc, out, err = _cli(capsys, "--baseline", baseline, "--current", baseline, "--rules", rules)
    assert rc != 0 and "line 1" in err


DUP_SPECS = [RunSpec("mlp", "none", "mnist", model_params={"depth": 3, "width": 32}, **(TINY | {"batch_size": b}))
             for b in (32, 64)]


@pytest.fixture(scope="module")
def dup_baseline(tmp_path_factory, data_dir):
    """Two runs with the same dataset/model/strategy/seed that differ in batch size (as in the batch-size suite)."""
    out = tmp_path_factory.mktemp("dup_baseline")
    run_grid(DUP_SPECS, out, data_dir=data_dir, suite={"name": "dup", "definition_hash": definition_hash(DUP_SPECS)},
             log=quiet)
    (out / "rules.txt").write_text("test_accuracy: -0.02\n")
    return out


def _edit_id(folder, run_id, fn):
    (path,) = folder.glob(f"*-{run_id}.json")
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


def test_runs_that_differ_only_in_batch_size_are_compared_apart(dup_baseline, tmp_path, capsys):
    current = _copy(dup_baseline, tmp_path / "current")
    _edit_id(current, DUP_SPECS[1].run_id, lambda r: r["test"].update(accuracy=0.0))
    rc, out, err = _cli(capsys, "--baseline", dup_baseline, "--current", current)
    assert rc == 1
    rows = [line for line in out.splitlines() if "test_accuracy" in line]
    assert len(rows) == 2
    (worse,) = [row for row in rows if " worse" in row]
    assert "mnist/mlp/none/seed0" in worse and "batch_size=64" in worse
    assert "batch_size=32" in next(row for row in rows if row is not worse)
    assert "(2 runs, 1 rules)" in out


def test_a_missing_run_among_runs_with_one_label_is_named_by_what_differs(dup_baseline, tmp_path, capsys):
    current = _copy(dup_baseline, tmp_path / "current")
    next(current.glob(f"*-{DUP_SPECS[0].run_id}.json")).unlink()
    rc, out, err = _cli(capsys, "--baseline", dup_baseline, "--current", current)
    assert rc == 1
    (missing,) = [line for line in out.splitlines() if "missing" in line]
    assert "batch_size=32" in missing and "worse" in missing
    assert any("batch_size=64" in line and "test_accuracy" in line and " same" in line for line in out.splitlines())


def test_a_folder_grown_by_two_definitions_is_checked_as_one(baseline, tmp_path, capsys):
    current = _copy(baseline, tmp_path / "current")
    _edit(current, "selu", lambda r: r.__setitem__("suite", {"name": "tiny", "definition_hash": "0123456789abcdef"}))
    rc, out, err = _cli(capsys, "--baseline", baseline, "--current", current)
    assert rc == 0, (out, err)  # a strategy added by a second command: no cell conflicts (issue 34, item 7)
    assert "0 worse" in out and "benchmark definition changed" in out


def test_a_rules_file_that_is_not_text_is_refused(tmp_path, capsys):
    rules = tmp_path / "rules.txt"
    rules.write_bytes(b"\xff\xfe\x00\x80 test_accuracy")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        check.parse_rules(rules)


def test_a_byte_order_mark_and_a_scope_alone_on_its_line(tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_bytes("\ufefftest_accuracy: -0.05\n".encode("utf-8"))
    assert [r.metric for r in check.parse_rules(rules)] == ["test_accuracy"]
    rules.write_text("[model=mlp8]\ntest_accuracy: -0.05\n")
    with pytest.raises(ConfigError, match="a scope goes on the same line as its rule"):
        check.parse_rules(rules)


# --- rows that a run at chance would pass (issue 24.9) ----------------------------------------------------------

def _set_accuracy(folder, strategy, value):
    _edit(folder, strategy, lambda r: r["test"].update(accuracy=value))


def test_a_row_that_a_run_at_chance_would_pass_is_listed_as_unguarded_but_does_not_fail(baseline, tmp_path, capsys):
    base = _copy(baseline, tmp_path / "base")
    _set_accuracy(base, "none", 0.115)  # 0.115 - 0.02 is below chance on MNIST (0.1)
    rules = _rules(tmp_path, "test_accuracy: -0.02\n")
    current = _copy(base, tmp_path / "current")
    _set_accuracy(current, "none", 0.1)  # learned nothing, and passes
    rc, out, err = _cli(capsys, "--baseline", base, "--current", current, "--rules", rules)
    assert rc == 0, out + err
    table = out.split("\n\n")[0].splitlines()
    none = next(line for line in table if line.startswith("mnist/mlp/none/") and "test_accuracy" in line)
    selu = next(line for line in table if line.startswith("mnist/mlp/selu/") and "test_accuracy" in line)
    assert " unguarded " in none and "test_accuracy: -0.02: a run at chance (0.1) passes too" in none
    assert " same" in selu  # its baseline is well above chance
    assert ("UNGUARDED: 1 row(s) cannot fail" in out and "  mnist/mlp/none/seed0  test_accuracy: baseline 0.115, a drop "
            "of 0.02 allowed (line 1 'test_accuracy: -0.02'), chance 0.1" in out)
    assert "0 worse, 0 improved, 1 same, 1 unguarded (cannot fail: see above) (2 runs, 1 rules)" in out
    _set_accuracy(current, "none", 0.05)  # below what the rule allows: still worse
    rc, out, err = _cli(capsys, "--baseline", base, "--current", current, "--rules", rules)
    assert rc == 1 and "1 worse" in out and "UNGUARDED" not in out


@pytest.mark.parametrize("text, line, selu", [
    ("final_train_loss: +10%\ntest_accuracy: -0.1\n", 2, 0.2),  # selu 0.2 - 0.1 reaches chance, none 0.115 too
    ("test_accuracy: +0.01\n", 1, 0.5),  # higher is worse: no drop ever fails
    ("test_accuracy: -0.02\n[strategy=none] test_accuracy: -0.05\n", 2, 0.5),  # the scoped rule's one run
])
def test_a_rule_that_guards_no_run_is_an_error_naming_the_line_and_runs(baseline, tmp_path, capsys, text, line, selu):
    base = _copy(baseline, tmp_path / "base")
    _set_accuracy(base, "none", 0.115)
    _set_accuracy(base, "selu", selu)
    rc, out, err = _cli(capsys, "--baseline", base, "--current", base, "--rules", _rules(tmp_path, text))
    assert rc == 2 and out == ""
    rule = text.splitlines()[line - 1]
    assert f"line {line} {rule!r} guards nothing" in err and "mnist/mlp/none/seed0 0.115" in err, err
    assert ("mnist/mlp/selu/seed0" in err) == ("strategy=none" not in text)


def test_the_cli_exits_2_on_a_rule_that_guards_nothing(baseline, tmp_path):
    import subprocess
    import sys

    base = _copy(baseline, tmp_path / "base")
    for strategy in ("none", "selu"):
        _set_accuracy(base, strategy, 0.11)
    (base / "rules.txt").write_text("test_accuracy: -0.02\n")
    done = subprocess.run([sys.executable, "-m", "normbench.cli", "check", "--baseline", str(base), "--current",
                           str(base)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "line 1 'test_accuracy: -0.02' guards nothing" in done.stderr and "make baseline" in done.stderr


def test_which_rules_and_runs_have_a_chance_level():
    rec = {"spec": {"dataset": "mnist"}, "test": {"accuracy": 0.3, "loss": 2.0},
           "history": [{"epoch": 0, "val_accuracy": 0.1}, {"epoch": 1, "val_accuracy": 0.3}]}

    def rule(metric, tolerance, relative=False, direction=-1):
        return check.Rule(metric, tolerance, relative, direction, "r").unguarded(rec)

    assert rule("test_accuracy", 0.2) == pytest.approx({"baseline": 0.3, "drop": 0.2, "floor": 0.1, "chance": 0.1})
    assert rule("test_accuracy", 0.19) is None  # a run at chance (0.1 < 0.3 - 0.19) fails
    assert rule("final_val_accuracy", 0.7, relative=True)["floor"] == pytest.approx(0.09)  # 70% of 0.3
    assert rule("final_val_accuracy", 0.5, relative=True) is None
    assert rule("test_accuracy", 0.25, direction=0) and rule("test_accuracy", 0.0, direction=1)
    assert rule("test_loss", 10.0) is None and rule("init_val_accuracy", 1.0) is None  # no chance level to judge by
    assert check.Rule("test_accuracy", 0.5, False, -1, "r").unguarded({**rec, "spec": {"dataset": "mine"}}) is None


def test_every_committed_baseline_rule_guards_some_run():
    from pathlib import Path

    from normbench.reader import load_records

    base = Path(__file__).resolve().parents[1] / "results" / "baseline"
    check.check_guards(check.parse_rules(base / "rules.txt"), load_records(base))


def test_no_committed_baseline_row_is_unguarded():
    """Every accuracy row of the CI baseline can fail: a run that learned nothing would be caught (issue: the mlp16
    smoke rows at 0.10-0.24 with a 0.15 tolerance passed anything)."""
    from pathlib import Path

    from normbench.reader import load_records

    base = Path(__file__).resolve().parents[1] / "results" / "baseline"
    records = load_records(base)
    rules = check.parse_rules(base / "rules.txt")
    unguarded = [(r["run_id"], rule.text) for r in records for rule in check.rules_for(rules, r)
                 if rule.unguarded(r)]
    assert records and not unguarded, unguarded
