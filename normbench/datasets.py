"""Real datasets: resolution, checksums, decoding once with a cache, splits, preprocessing.

Resolution order for each dataset: an explicit data directory (``--data-dir`` or
``NORMBENCH_DATA_DIR``), else the canonical Keras download. Files are verified by
SHA-256; a missing, truncated or corrupt file raises :class:`DataError` naming the
file, what was expected and how to fix it.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .env import DATA_DIR_ENV, cache_dir, data_dir_setting
from .errors import DataError
from .registry import DATASETS


MNIST_SHA256 = {
    "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1": "Keras mnist.npz",
    "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64": "normbench offline pack",
}
CIFAR_TAR_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR_JPEG_SHA256 = "816040ca4dcf577df78fb3d83e918c2c1cbb347e5dccf966fe9507b91daaf554"


@dataclass
class RawData:
    """A dataset as stored: uint8 images (N, H, W, C), integer labels, and where it came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    num_classes: int = 10


@dataclass
class Splits:
    """Float32 train / validation / test arrays ready for a model, with provenance."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str
    preprocessing: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The explicit data directory, from the argument or ``NORMBENCH_DATA_DIR``; None if neither."""
    value = data_dir if data_dir is not None else data_dir_setting()
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if data_dir is not None else DATA_DIR_ENV
        raise DataError(
            f"the data directory {str(path)!r} (from {origin}) does not exist or is not a folder. "
            f"Point {origin} at a folder holding mnist.npz / cifar10 files, or unset it to use the Keras download."
        )
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, expected: dict[str, str], what: str) -> str:
    """Check a file's SHA-256 against the accepted ones; return the matching label."""
    if not path.is_file():
        raise DataError(f"{what}: {path} is missing.")
    digest = sha256(path)
    if digest not in expected:
        accepted = "; ".join(f"{h} ({label})" for h, label in expected.items())
        raise DataError(
            f"{what}: {path} ({path.stat().st_size} bytes) has SHA-256 {digest}, which is none of the accepted "
            f"checksums [{accepted}]. The file is truncated, corrupt or a different file: replace it with a fresh "
            f"copy (or delete it and unset {DATA_DIR_ENV} to use the Keras download)."
        )
    return expected[digest]


def _check_arrays(what: str, path: Path, raw: RawData, n_train: int, n_test: int, image: tuple[int, ...]) -> RawData:
    problems = []
    for split, x, y, n in (("train", raw.x_train, raw.y_train, n_train), ("test", raw.x_test, raw.y_test, n_test)):
        if x.shape != (n, *image) or x.dtype != np.uint8:
            problems.append(f"x_{split} is {x.dtype}{x.shape}, expected uint8{(n, *image)}")
        if y.shape != (n,) or y.min() < 0 or y.max() >= raw.num_classes:
            problems.append(f"y_{split} is {y.shape} with labels {y.min()}..{y.max()}, expected ({n},) in 0..9")
    if problems:
        raise DataError(f"{what}: {path} decoded to unexpected arrays: {'; '.join(problems)}. Replace the file.")
    return raw


# --- MNIST ------------------------------------------------------------------------------------


def _mnist_from_npz(path: Path, label: str) -> RawData:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"mnist: could not read {path} as a Keras mnist.npz ({e}). Replace the file.") from None
    raw = RawData(
        arrays["x_train"][..., None],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"][..., None],
        arrays["y_test"].astype(np.int64),
        source=f"mnist ({label}: {path.name})",
    )
    return _check_arrays("mnist", path, raw, 60000, 10000, (28, 28, 1))


@DATASETS.register(name="mnist")
def load_mnist(data_dir: Path | None) -> RawData:
    """MNIST, 60k/10k 28x28 grayscale digits (Keras layout mnist.npz)."""
    if data_dir is not None:
        path = data_dir / "mnist.npz"
        if not path.is_file():
            raise DataError(
                f"mnist: {path} is missing. Put Keras' mnist.npz in {data_dir} "
                f"(SHA-256 {next(iter(MNIST_SHA256))}), or point {DATA_DIR_ENV}/--data-dir elsewhere."
            )
        return _mnist_from_npz(path, _verify(path, MNIST_SHA256, "mnist"))
    import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
    except Exception as e:  # network errors come in many types
        raise _download_error("mnist", "mnist.npz", e) from None
    return RawData(xtr[..., None], ytr.astype(np.int64), xte[..., None], yte.astype(np.int64), "mnist (keras download)")


@DATASETS.register(name="mnist_binary")
def load_mnist_binary(data_dir: Path | None) -> RawData:
    """MNIST with every pixel binarized at 128 (0 or 255): the binary 28x28 images of the BN paper's Figure 1."""
    raw = load_mnist(data_dir)
    binarize = lambda x: np.where(x >= 128, 255, 0).astype(np.uint8)  # noqa: E731
    return RawData(binarize(raw.x_train), raw.y_train, binarize(raw.x_test), raw.y_test,
                   source=f"{raw.source}, binarized at 128")


# --- CIFAR-10 ---------------------------------------------------------------------------------


# What a CIFAR-10 python batch holds: a dict of bytes keys, lists of ints and bytes, and one uint8
# NumPy array. Unpickling may construct only these NumPy types; anything else (a class, a function
# such as os.system) is refused before it is called.
_CIFAR_PICKLE_CLASSES = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits the types of a CIFAR-10 batch and nothing that can run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_PICKLE_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds no such object")


def _cifar_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(d, dict) or not isinstance(d.get(b"labels"), list) or b"data" not in d:
        raise ValueError("not a CIFAR-10 batch (a dict with b'data' and b'labels')")
    x = np.asarray(d[b"data"], dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(d[b"labels"]) != len(x):
        raise ValueError(f"a CIFAR-10 batch has data of shape (n, 3072) and n labels; got {x.shape}, {len(d[b'labels'])}")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d[b"labels"], dtype=np.int64)


def _cifar_from_batches(read, path: Path) -> tuple[np.ndarray, ...]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    try:
        parts = [_cifar_batch(read(n)) for n in names]
    except (OSError, KeyError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            pickle.UnpicklingError, tarfile.TarError) as e:
        raise DataError(f"cifar10: could not read the CIFAR-10 python batches in {path} ({e}). Replace them.") from None
    xtr = np.concatenate([p[0] for p in parts[:5]])
    ytr = np.concatenate([p[1] for p in parts[:5]])
    return xtr, ytr, parts[5][0], parts[5][1]


def _decode_jpeg_pack(path: Path) -> tuple[np.ndarray, ...]:
    from PIL import Image

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        out = []
        for split in ("train", "test"):
            blob, offsets = arrays[f"{split}_jpeg"], arrays[f"{split}_offsets"]
            x = np.empty((len(offsets) - 1, 32, 32, 3), dtype=np.uint8)
            for i in range(len(x)):
                img = Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes()))
                x[i] = np.asarray(img.convert("RGB"))
            out += [x, arrays[f"{split}_labels"].astype(np.int64)]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cifar10: could not decode the JPEG pack {path} ({e}). Replace the file.") from None
    return tuple(out)


def _cached(key: str, make) -> tuple[np.ndarray, ...]:
    """Decode once: arrays are cached as an uncompressed .npz, written atomically."""
    path = cache_dir() / f"{key}.npz"
    names = ("x_train", "y_train", "x_test", "y_test")
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return tuple(f[n] for n in names)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            path.unlink(missing_ok=True)  # a broken cache is rebuilt, never trusted
    arrays = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **dict(zip(names, arrays)))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs decoding time
    return arrays


@DATASETS.register(name="cifar10")
def load_cifar10(data_dir: Path | None) -> RawData:
    """CIFAR-10, 50k/10k 32x32 RGB images (original python batches or the JPEG pack)."""
    if data_dir is not None:
        folder, tar, pack = data_dir / "cifar-10-batches-py", data_dir / "cifar-10-python.tar.gz", data_dir / "cifar10_jpeg.npz"
        if folder.is_dir():
            arrays = _cifar_from_batches(lambda n: (folder / n).read_bytes(), folder)
            source, path = f"cifar10 (original python batches: {folder.name})", folder
        elif tar.is_file():
            _verify(tar, {CIFAR_TAR_SHA256: "cifar-10-python.tar.gz"}, "cifar10")

            def read_tar():
                with tarfile.open(tar, "r:gz") as t:
                    return _cifar_from_batches(lambda n: t.extractfile(f"cifar-10-batches-py/{n}").read(), tar)

            arrays = _cached(f"cifar10_tar_{CIFAR_TAR_SHA256[:16]}", read_tar)
            source, path = f"cifar10 (original archive: {tar.name})", tar
        elif pack.is_file():
            _verify(pack, {CIFAR_JPEG_SHA256: "cifar10_jpeg.npz"}, "cifar10")
            arrays = _cached(f"cifar10_jpeg_{CIFAR_JPEG_SHA256[:16]}", lambda: _decode_jpeg_pack(pack))
            source, path = f"cifar10 (jpeg pack: {pack.name})", pack
        else:
            raise DataError(
                f"cifar10: {data_dir} holds none of cifar-10-batches-py/, cifar-10-python.tar.gz or cifar10_jpeg.npz. "
                f"Put one of them there, or point {DATA_DIR_ENV}/--data-dir elsewhere."
            )
        raw = RawData(*arrays, source=source)
        return _check_arrays("cifar10", path, raw, 50000, 10000, (32, 32, 3))
    import keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    except Exception as e:
        raise _download_error("cifar10", "cifar-10-python.tar.gz or cifar10_jpeg.npz", e) from None
    return RawData(xtr, ytr.reshape(-1).astype(np.int64), xte, yte.reshape(-1).astype(np.int64), "cifar10 (keras download)")


def _download_error(name: str, files: str, e: Exception) -> DataError:
    return DataError(
        f"{name}: no data directory is set and the Keras download failed ({type(e).__name__}: {e}). "
        f"Without network access, set {DATA_DIR_ENV} (or --data-dir) to a folder holding {files}."
    )


@dataclass(frozen=True)
class DatasetFacts:
    """What is known about a built-in dataset without reading it (pre-flight checks, cost estimates)."""

    shape: tuple[int, ...]  # one sample's shape
    train: int  # training images, before the validation split
    classes: int
    files: tuple[str, ...]  # what a data directory may hold it as (any one of them)


_MNIST = DatasetFacts((28, 28, 1), 60000, 10, ("mnist.npz",))
DATASET_FACTS = {
    "mnist": _MNIST,
    "mnist_binary": _MNIST,
    "cifar10": DatasetFacts((32, 32, 3), 50000, 10,
                            ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10_jpeg.npz")),
}
# views of the one table, under the names the checks read
TRAIN_SIZES = {name: (f.train, f.classes) for name, f in DATASET_FACTS.items()}
DATA_FILES = {name: f.files for name, f in DATASET_FACTS.items()}


def check_available(names, data_dir: str | None = None) -> None:
    """Without reading any data: the data directory (if one is set) exists and holds a file for each dataset."""
    folder = resolve_data_dir(data_dir)
    if folder is None:
        return  # the Keras download is tried when the run starts
    for name in names:
        files = DATA_FILES.get(name)
        if files and not any((folder / f).exists() for f in files):
            raise DataError(f"{name}: {folder} holds none of {', '.join(files)}. Put one of them there, or point "
                            f"{DATA_DIR_ENV}/--data-dir elsewhere (see the README's data set-up).")


def load_raw(name: str, data_dir: str | None = None) -> RawData:
    """The stored dataset ``name``, memoized per process and data folder.

    The folder is resolved on every call, before the memo: NORMBENCH_DATA_DIR is read as it is now (not as it was
    at the first call), and a missing folder is named by where it came from (the argument or the variable).
    """
    return _load_raw(name, resolve_data_dir(data_dir))


@lru_cache(maxsize=4)
def _load_raw(name: str, folder: Path | None) -> RawData:
    return DATASETS.get(name)(folder)


load_raw.cache_clear = _load_raw.cache_clear  # type: ignore[attr-defined]  (tests start from an empty memo)


# --- splits and preprocessing ----------------------------------------------------------------


def balanced_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn at random with classes as balanced as ``n`` allows (counts differ by at most 1)."""
    if n >= len(y):
        return rng.permutation(len(y))
    order = rng.permutation(len(y))
    classes = np.unique(y)
    per_class = -(-n // len(classes))
    rank = np.empty(len(y), dtype=np.int64)  # position of each sample within its class, in `order`
    for c in classes:
        members = order[y[order] == c]
        rank[members] = np.arange(len(members))
    keep = order[rank[order] < per_class]
    # trim the surplus evenly: drop the last-ranked samples first
    keep = keep[np.argsort(rank[keep], kind="stable")][:n]
    return rng.permutation(keep)


def load_splits(
    name: str,
    *,
    input_scaling: str = "unit",
    val_size: int = 5000,
    limit: int | None = None,
    eval_limit: int | None = None,
    data_dir: str | None = None,
    split_seed: int = 0,
) -> Splits:
    """Train / validation / test arrays for one run.

    The validation set is held out of the training set (class-balanced, the same for
    every run with the same ``split_seed``); ``limit`` caps the training samples and
    ``eval_limit`` the validation and test samples, both class-balanced. The test set
    is only for final metrics. Scaling statistics come from the training split only.
    """
    raw = load_raw(name, None if data_dir is None else str(data_dir))
    classes = len(np.unique(raw.y_train))
    if val_size > len(raw.y_train) - classes:
        raise DataError(f"{name}: val_size = {val_size} leaves too few training images ({len(raw.y_train)} in all, "
                        f"at least one per class must stay for training); choose val_size < "
                        f"{len(raw.y_train) - classes}")
    rng = np.random.default_rng(split_seed)
    val_idx = balanced_indices(raw.y_train, val_size, rng)
    pool = np.setdiff1d(np.arange(len(raw.y_train)), val_idx)
    train_idx = pool[balanced_indices(raw.y_train[pool], limit, rng)] if limit else rng.permutation(pool)
    if eval_limit:
        val_idx = val_idx[balanced_indices(raw.y_train[val_idx], eval_limit, rng)]
        test_idx = balanced_indices(raw.y_test, eval_limit, rng)
    else:
        test_idx = np.arange(len(raw.y_test))

    x_train = raw.x_train[train_idx].astype(np.float32) / 255.0
    prep: dict = {"input_scaling": input_scaling}
    if input_scaling == "standardize":
        mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        std = x_train.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        prep.update(mean=mean.round(6).tolist(), std=std.round(6).tolist())
    elif input_scaling == "standardize_feature":
        # per pixel and channel, as the SNN paper's code does; a constant pixel (MNIST's border) keeps std 1
        mean = x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = x_train.std(axis=0, dtype=np.float64).astype(np.float32)
        constant = std < 1e-6
        std[constant] = 1.0
        prep.update(per="feature", constant_features=int(constant.sum()),
                    mean_range=[float(mean.min()), float(mean.max())], std_range=[float(std.min()), float(std.max())])
    else:
        mean, std = np.float32(0.0), np.float32(1.0)

    def scale(x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
        return (out - mean) / std if input_scaling != "unit" else out

    return Splits(
        x_train=scale(x_train),
        y_train=raw.y_train[train_idx],
        x_val=scale(raw.x_train[val_idx]),
        y_val=raw.y_train[val_idx],
        x_test=scale(raw.x_test[test_idx]),
        y_test=raw.y_test[test_idx],
        num_classes=raw.num_classes,
        source=raw.source,
        preprocessing=prep,
    )
