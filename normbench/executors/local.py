"""``local``: every run in this process, one after another."""

from __future__ import annotations

from .. import stop
from ..registry import EXECUTORS


@EXECUTORS.register(name="local")
def local(todo, ctx):
    """In this process, one run after another (default with --jobs 1)."""
    for i, spec in enumerate(todo):
        stop.checkpoint()
        ctx.log(ctx.header(i, spec))
        yield spec, ctx.run(spec, data_dir=ctx.data_dir, log=ctx.log, engine=ctx.engine)
