"""Errors that a user can act on: each message names the problem and the fix."""


class NormbenchError(Exception):
    """Base class; the CLI prints these as one paragraph, without a traceback."""


class UnknownNameError(NormbenchError, KeyError):
    """A name (model, strategy, dataset, suite) that no registry holds."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(NormbenchError):
    """A dataset file that is missing, truncated, corrupt or of the wrong shape."""


class ConfigError(NormbenchError, ValueError):
    """A bad run spec, suite file or command-line value."""


class OutputClosed(KeyboardInterrupt):
    """The terminal or pipe that progress goes to was closed: stop as on Ctrl-C (finished records are kept)."""


def say(msg: str) -> None:
    """Print a progress line; a closed output (``normbench run | head``) stops the grid like Ctrl-C."""
    try:
        print(msg, flush=True)
    except BrokenPipeError:
        raise OutputClosed() from None
