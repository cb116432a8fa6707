"""The command group: where every command's deliberate errors become one line.

A ``ReversalPipelineError`` (a missing variable, bad input, an unreachable
database) is caught here, once, for every command: the operator sees
``error: <what is wrong and how to fix it>`` on stderr and exit code 2, never
a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from reversal_pipeline.errors import ReversalPipelineError

#: Exit code of a refused command (click uses 2 for usage errors too).
REFUSED_EXIT_CODE = 2


class OneLineErrorGroup(click.Group):
    """A ``click.Group`` that prints the package's own errors as one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReversalPipelineError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(REFUSED_EXIT_CODE)


def one_line(message: str) -> str:
    """The message with its line breaks folded, so the error really is one line."""
    return " ".join(message.split())
