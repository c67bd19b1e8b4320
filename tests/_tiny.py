"""Settings shared by the tests that train real runs: tiny slices of the real data, and a silent log."""


def tiny(**overrides) -> dict:
    """RunSpec settings for a run of seconds: 100 images of each split, one epoch, unless overridden."""
    return {"epochs": 1, "limit": 100, "eval_limit": 100, "val_size": 100, "probe_size": 16, "train_eval_size": 100,
            "batch_size": 32, **overrides}


def quiet(_msg) -> None:
    """A ``log`` that drops every line (the tests read records and files, not the progress lines)."""
