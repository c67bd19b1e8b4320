"""The runner, records and store on real data (tiny slices) and real files."""

import json
import math

import pytest

from normbench import store
from normbench.errors import ConfigError
from normbench.grid import run_grid
from normbench.runner import run
from normbench.record import SCHEMA_VERSION
from normbench.report.frames import long_frame
from normbench.spec import RunSpec
from normbench.suites import get_suite

from _tiny import quiet, tiny

TINY = tiny(epochs=2, limit=200, val_size=200, probe_size=32)


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory, data_dir):
    """Records of a small real grid, shared by the tests that only read them."""
    out = tmp_path_factory.mktemp("grid")
    specs = [RunSpec("mlp", s, "mnist", model_params={"depth": 3, "width": 32}, **TINY) for s in ("none", "selu")]
    run_grid(specs, out, data_dir=data_dir, log=quiet)
    return out, specs


def test_record_is_complete_and_self_describing(grid_dir):
    out, specs = grid_dir
    rec = store.find_record(out, specs[1])
    assert rec["schema_version"] == SCHEMA_VERSION and rec["run_id"] == specs[1].run_id
    assert rec["status"] == "ok" and rec["error"] is None
    assert RunSpec.from_dict(rec["spec"]) == specs[1]
    assert [h["epoch"] for h in rec["history"]] == [0, 1, 2]
    assert "fit_loss" not in rec["history"][0] and rec["history"][2]["samples_per_s"] > 0
    assert 0 <= rec["test"]["accuracy"] <= 1
    assert rec["data"]["sizes"] == {"train": 200, "val": 100, "test": 100}
    assert rec["data"]["preprocessing"]["input_scaling"] == "standardize"
    assert rec["param_count"] > 0 and len(rec["layers"]) == 3
    env = rec["environment"]
    assert env["backend"] and env["keras"] and env["device"] and "hostname" not in json.dumps(env).lower()
    epochs = {r[0] for r in rec["stats"]["rows"]}
    assert epochs == {0, 1, 2}
    quantities = {(r[2], r[3]) for r in rec["stats"]["rows"]}
    for tap in ("pre", "act"):
        for q in ("mean", "std", "p05", "p15", "p50", "p85", "p95"):
            assert (tap, q) in quantities
    assert ("act", "sat_frac") in quantities and ("kernel", "norm_max") in quantities


def test_records_round_trip_into_one_dataframe(grid_dir):
    out, specs = grid_dir
    df = long_frame(store.load_records(out))
    assert set(df.strategy) == {"none", "selu"}
    rec = store.find_record(out, specs[0])
    got = df[(df.run_id == specs[0].run_id) & (df.tap == "test") & (df.quantity == "accuracy")].value.item()
    assert got == rec["test"]["accuracy"]
    stats = df[(df.run_id == specs[0].run_id) & (df.tap == "act") & (df.quantity == "mean") & (df.layer == 2)]
    assert stats.epoch.tolist() == [0, 1, 2]


def test_resume_skips_completed_runs_and_force_reruns(grid_dir, data_dir):
    out, specs = grid_dir
    counts = run_grid(specs, out, data_dir=data_dir, log=quiet)
    assert counts == {"skipped": 2, "ok": 0, "diverged": 0, "error": 0}
    counts = run_grid(specs[:1], out, force=True, data_dir=data_dir, log=quiet)
    assert counts["ok"] == 1 and counts["skipped"] == 0


def test_same_seed_reproduces_initialization_statistics(grid_dir, data_dir):
    out, specs = grid_dir
    again = run(specs[0], data_dir=data_dir, log=quiet)
    first = store.find_record(out, specs[0])
    init = lambda rec: [list(r) for r in rec["stats"]["rows"] if r[0] == 0]  # noqa: E731
    assert init(again) == init(first)
    assert again["history"][0] == {**first["history"][0], "eval_s": again["history"][0]["eval_s"], "probe_s": again["history"][0]["probe_s"]}


def test_divergence_is_a_status_not_a_crash(data_dir):
    spec = RunSpec("mlp", "none", "mnist", learning_rate=1e6, momentum=0.9, model_params={"depth": 3, "width": 32}, **TINY)
    rec = run(spec, data_dir=data_dir, log=quiet)
    assert rec["status"] == "diverged" and rec["diverged_epoch"] in (1, 2)
    assert rec["test"] is None
    assert not math.isfinite(rec["history"][-1]["fit_loss"]) or not math.isfinite(rec["history"][-1]["train_loss"])


def test_a_grid_with_unbuildable_specs_fails_before_training_listing_each_once(tmp_path, data_dir):
    good = RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 8}, **TINY)
    bad = [good.with_(model_params={"depth": 2, "heigth": 4}), good.with_(model_params={"depth": 2, "heigth": 4}, seed=1),
           good.with_(strategy="maxnorm", strategy_params={"radius": 2})]
    with pytest.raises(ConfigError) as e:
        run_grid([*bad, good], tmp_path, data_dir=data_dir, log=quiet)
    message = str(e.value)
    assert "nothing was trained" in message and message.count("heigth") == 1 and "(2 runs" in message and "radius" in message
    assert not list(tmp_path.glob("*.json"))


def test_an_error_is_recorded_and_the_grid_goes_on(tmp_path, data_dir):
    # passes the pre-flight (a string), fails when Keras builds the layer
    bad = RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 8, "activation": "nope4"}, **TINY)
    good = RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 8}, **TINY)
    counts = run_grid([bad, good], tmp_path, data_dir=data_dir, log=quiet)
    assert counts["error"] == 1 and counts["ok"] == 1
    rec = store.find_record(tmp_path, bad)
    assert rec["status"] == "error" and "nope4" in rec["error"]
    # an error is not a result: resume retries it, but not the finished run
    assert run_grid([bad, good], tmp_path, data_dir=data_dir, log=quiet)["skipped"] == 1


def test_interrupted_write_leaves_no_partial_record(tmp_path, monkeypatch):
    spec = RunSpec("mlp", "none", "mnist")
    rec = {"schema_version": SCHEMA_VERSION, "run_id": spec.run_id, "spec": spec.to_dict(), "status": "ok"}
    path = store.save_record(tmp_path, rec)
    before = path.read_text()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.json, "dump", boom)
    with pytest.raises(KeyboardInterrupt):
        store.save_record(tmp_path, {**rec, "status": "diverged"})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_smoke_suite_covers_both_datasets_and_every_strategy():
    from normbench.registry import NORMS

    suite = get_suite("smoke")
    assert {s.dataset for s in suite.specs} == {"mnist", "cifar10"}
    for dataset in ("mnist", "cifar10"):
        assert {s.strategy for s in suite.specs if s.dataset == dataset} == set(NORMS.list())
    assert len(suite.definition_hash) == 16


def test_run_id_is_stable_and_ignores_fields_left_at_their_default():
    a = RunSpec("mlp8", "selu", "mnist", epochs=3)
    assert a.run_id == RunSpec.from_dict(json.loads(json.dumps(a.to_dict()))).run_id
    assert a.canonical() == {"model": "mlp8", "strategy": "selu", "dataset": "mnist", "seed": 0, "epochs": 3}
    assert a.run_id != a.with_(seed=1).run_id != a.with_(epochs=4).run_id
    assert a.run_id != a.with_(model_params={"width": 64}).run_id


def test_inference_loss_and_accuracy_equal_keras_evaluate(rng):
    import keras

    from normbench.engines import FitEngine
    from normbench.runner import build_compiled, loss_and_accuracy

    model, _ = build_compiled(RunSpec("mlp", "batchnorm", "mnist", model_params={"depth": 2, "width": 16}), (12,), 3)
    x = rng.normal(size=(2500, 12)).astype("float32")  # more than one chunk, with a ragged last one
    y = rng.integers(0, 3, size=2500)
    model.fit(x, y, epochs=1, verbose=0)
    ours = loss_and_accuracy(FitEngine(model, x, y, 32).logits(x), y)
    theirs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert ours[0] == pytest.approx(theirs["loss"], rel=1e-5)
    assert ours[1] == pytest.approx(theirs["accuracy"], abs=1e-6)
    keras.backend.clear_session()


def test_mixed_precision_is_opt_in_part_of_the_id_and_reset_after_the_run(data_dir):
    import keras

    spec = RunSpec("mlp", "selu", "mnist", precision="mixed_bfloat16", model_params={"depth": 2, "width": 16}, **TINY)
    assert spec.run_id != spec.with_(precision="float32").run_id
    rec = run(spec, data_dir=data_dir, log=quiet)
    assert rec["status"] == "ok", rec["error"]
    assert rec["spec"]["precision"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_record_is_known_by_its_content_not_its_file_name(grid_dir, tmp_path, data_dir):
    import shutil

    out, specs = grid_dir
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    first = sorted(folder.glob("*.json"))[0]
    shutil.copy(first, folder / "a-stray-copy.json")  # the same run twice
    first.rename(folder / "renamed.json")  # and its canonical file gone
    recs = store.load_records(folder)
    assert sorted(r["run_id"] for r in recs) == sorted(s.run_id for s in specs)  # each run once
    counts = run_grid(specs, folder, data_dir=data_dir, log=quiet)  # the renamed record still counts for resume
    assert counts["skipped"] == 2 and counts["ok"] == 0
    forged = json.loads((folder / "renamed.json").read_text())
    forged["spec"]["epochs"] = 99  # a record whose spec no longer hashes to its run id
    (folder / "renamed.json").write_text(json.dumps(forged))
    with pytest.raises(Exception, match="not the hash of its spec"):
        store.load_records(folder)


def test_run_costs_scale_with_depth_epochs_and_samples():
    from normbench.flops import run_costs

    a = RunSpec("mlp8", "none", "mnist", epochs=2, limit=1000, val_size=100, eval_limit=100, train_eval_size=100, probe_size=16)
    specs = [a, a.with_(model="mlp32"), a.with_(epochs=4), a.with_(limit=2000), a.with_(dataset="cifar10", model="convnet")]
    c = run_costs(specs)
    assert set(c) == {s.run_id for s in specs}
    assert c[specs[1].run_id] > 2 * c[a.run_id]  # 32 layers against 8
    assert c[specs[2].run_id] == pytest.approx(2 * c[a.run_id], rel=0.05)  # twice the epochs
    assert c[specs[3].run_id] == pytest.approx(2 * c[a.run_id], rel=0.15)  # twice the training samples
    assert c[specs[4].run_id] > 10 * c[a.run_id]  # a conv net on CIFAR-10


def test_progress_lines_show_each_runs_share_of_the_work_and_a_cost_weighted_eta(tmp_path, data_dir):
    specs = [RunSpec("mlp", "none", "mnist", model_params={"depth": d, "width": 16}, **TINY) for d in (2, 6)]
    lines = []
    run_grid(specs, tmp_path, data_dir=data_dir, log=lines.append)
    headers = [line for line in lines if line.startswith("[")]
    assert len(headers) == 2 and all("of the grid's work" in h for h in headers)
    assert "ETA" in headers[1] and "ETA" not in headers[0]


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar_with_the_lines_above_it(tmp_path, data_dir):
    import io

    specs = [RunSpec("mlp", "none", "mnist", model_params={"depth": d, "width": 16}, **TINY) for d in (2, 6)]
    screen = io.StringIO()
    run_grid(specs, tmp_path, data_dir=data_dir, log=lambda _m: None, bar_stream=screen)
    out = screen.getvalue()
    assert "grid 100%|" in out and "2/2 runs" in out  # weighted by cost, it reaches 100% with the last run
    assert "[1/2] mnist/mlp/none/seed0" in out and "done in" in out  # the lines, above the bar
    assert out.index("[2/2]") < out.rindex("grid 100%")


def test_output_that_is_not_a_terminal_gets_plain_lines(tmp_path, data_dir, capsys):
    specs = [RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 16}, **TINY)]
    run_grid(specs, tmp_path, data_dir=data_dir)  # pytest's captured stdout is not a terminal
    out = capsys.readouterr().out
    assert "[1/1] mnist/mlp/none/seed0" in out and "|" not in out and "\r" not in out


def test_a_size_larger_than_the_data_is_said_and_the_record_says_what_was_used(data_dir):
    spec = RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 8},
                   **{**TINY, "epochs": 1, "eval_limit": 20_000, "probe_size": 500})
    lines = []
    rec = run(spec, data_dir=data_dir, log=lines.append)
    assert rec["status"] == "ok", rec["error"]
    assert rec["data"]["sizes"]["test"] == 10_000 and rec["spec"]["eval_limit"] == 20_000
    [note] = [line for line in lines if "note:" in line]
    assert "eval_limit = 20000 (used 10000)" in note and "probe_size = 500 (used 200)" in note, note
