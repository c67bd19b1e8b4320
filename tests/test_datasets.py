import shutil

import numpy as np
import pytest

from normbench.datasets import balanced_indices, load_raw, load_splits, resolve_data_dir
from normbench.errors import DataError


def test_real_mnist_loads_with_its_known_contents(data_dir):
    raw = load_raw("mnist", data_dir)
    assert raw.x_train.shape == (60000, 28, 28, 1) and raw.x_test.shape == (10000, 28, 28, 1)
    assert raw.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert raw.y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(raw.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert raw.source.startswith("mnist (")


def test_real_cifar10_loads_and_names_its_source(data_dir):
    raw = load_raw("cifar10", data_dir)
    assert raw.x_train.shape == (50000, 32, 32, 3) and raw.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(raw.y_train).tolist() == [5000] * 10
    means = raw.x_train.reshape(-1, 3).mean(axis=0)
    assert np.allclose(means, [125.3, 123.0, 113.9], atol=1.0)  # CIFAR-10's published channel means
    assert raw.source.startswith("cifar10 (")


def test_splits_are_disjoint_balanced_and_standardized_from_train_only(data_dir):
    s = load_splits("mnist", input_scaling="standardize", val_size=1000, limit=500, eval_limit=200, data_dir=data_dir)
    assert s.sizes() == {"train": 500, "val": 200, "test": 200}
    assert np.bincount(s.y_train, minlength=10).tolist() == [50] * 10
    assert np.bincount(s.y_val, minlength=10).tolist() == [20] * 10
    assert abs(float(s.x_train.mean())) < 1e-4 and abs(float(s.x_train.std()) - 1) < 1e-3
    # the same split for every run: the validation images never appear in training
    train = {x.tobytes() for x in s.x_train}
    assert not any(x.tobytes() in train for x in s.x_val)
    unit = load_splits("mnist", val_size=1000, limit=500, eval_limit=200, data_dir=data_dir)
    assert unit.x_train.min() >= 0 and unit.x_train.max() <= 1
    assert np.array_equal(unit.y_train, s.y_train)


def test_balanced_indices_differ_by_at_most_one_per_class(rng):
    y = np.repeat(np.arange(10), [900, 50, 100, 100, 100, 100, 100, 100, 100, 100])
    idx = balanced_indices(y, 95, rng)
    counts = np.bincount(y[idx], minlength=10)
    assert len(set(idx.tolist())) == 95 and counts.max() - counts.min() <= 1


def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    load_raw.cache_clear()
    d = tmp_path / "data"
    d.mkdir()
    return d


def test_missing_file_names_it_and_the_fix(tmp_path, monkeypatch):
    d = _fresh(tmp_path, monkeypatch)
    with pytest.raises(DataError, match=r"mnist: .*mnist\.npz is missing.*NORMBENCH_DATA_DIR"):
        load_raw("mnist", str(d))
    with pytest.raises(DataError, match=r"cifar10: .* holds none of cifar-10-batches-py/, cifar-10-python\.tar\.gz"):
        load_raw("cifar10", str(d))
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        resolve_data_dir(tmp_path / "nope")


def test_truncated_or_corrupt_file_is_refused_by_checksum(tmp_path, monkeypatch, data_dir):
    d = _fresh(tmp_path, monkeypatch)
    src = resolve_data_dir(data_dir) / "mnist.npz" if data_dir else None
    if src is None or not src.is_file():
        pytest.skip("needs the mnist.npz of a data directory")
    (d / "mnist.npz").write_bytes(src.read_bytes()[:100_000])  # truncated copy
    with pytest.raises(DataError, match=r"mnist\.npz \(100000 bytes\) has SHA-256 .* truncated, corrupt"):
        load_raw("mnist", str(d))
    (d / "cifar10_jpeg.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"cifar10: .*cifar10_jpeg\.npz .* none of the accepted checksums"):
        load_raw("cifar10", str(d))


def test_original_cifar_batches_folder_is_read(tmp_path, monkeypatch):
    """The original python-batch layout, written here in its real format from a few fake images."""
    import pickle

    d = _fresh(tmp_path, monkeypatch)
    folder = d / "cifar-10-batches-py"
    folder.mkdir()
    r = np.random.default_rng(0)
    n = {f"data_batch_{i}": 10000 for i in range(1, 6)} | {"test_batch": 10000}
    for name, count in n.items():
        data = r.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": list(np.arange(count) % 10)}))
    raw = load_raw("cifar10", str(d))
    assert raw.x_train.shape == (50000, 32, 32, 3) and raw.source.startswith("cifar10 (original python batches")
    (folder / "test_batch").write_bytes(b"garbage")
    load_raw.cache_clear()
    with pytest.raises(DataError, match="could not read the CIFAR-10 python batches"):
        load_raw("cifar10", str(d))
    shutil.rmtree(folder)


def test_a_malicious_cifar_batch_cannot_run_code(tmp_path):
    """A data folder whose batch is a pickle that would run a shell command: refused, through the CLI, no traceback."""
    import os
    import pickle
    import subprocess
    import sys

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    env = {**os.environ, "NORMBENCH_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "normbench.cli", "run", "--datasets", "cifar10", "--models", "convnet",
                           "--strategies", "none", "--data-dir", str(tmp_path / "data"), "--results", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert not marker.exists(), "the pickle ran a command"
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "refused to load posix.system" in done.stderr and "could not read the CIFAR-10 python batches" in done.stderr


def test_binarized_mnist_and_per_feature_standardization(data_dir):
    from normbench.datasets import load_raw

    raw = load_raw("mnist_binary", data_dir)
    assert set(np.unique(raw.x_train[:500])) == {0, 255} and "binarized at 128" in raw.source
    s = load_splits("mnist", input_scaling="standardize_feature", val_size=500, limit=2000, eval_limit=200,
                    data_dir=data_dir)
    std = s.x_train.std(axis=0)
    varying = std > 0
    np.testing.assert_allclose(s.x_train.mean(axis=0)[varying], 0.0, atol=1e-4)
    np.testing.assert_allclose(std[varying], 1.0, rtol=1e-3)
    assert s.preprocessing["per"] == "feature" and s.preprocessing["constant_features"] == int((~varying).sum()) > 0


def test_a_validation_split_that_leaves_no_training_data_names_val_size(data_dir):
    with pytest.raises(DataError, match=r"val_size = 60000 leaves too few training images \(60000 in all"):
        load_splits("mnist", val_size=60000, data_dir=data_dir)
    near = load_splits("mnist", val_size=59000, data_dir=data_dir)  # class-balanced: a little under 59000
    assert len(near.y_train) + len(near.y_val) == 60000 and len(near.y_train) >= 1000
