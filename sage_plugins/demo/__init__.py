"""``sage demo``: index SAGE's documentation and answer questions about it (RAG).

Contributed to the ``sage`` command line through ``register_commands``, exactly as a
third-party command would be. ``corpus`` holds the demo's data (SAGE's docs as
passages, sample questions); ``cli`` the command; ``answerers`` what answers (the
extractive backend, a real server, or the tiny random-weight model); ``progress`` the
bars; ``report`` the output.
"""

from __future__ import annotations

import click

from sage_core import hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``sage demo``."""
    from sage_plugins.demo.cli import demo

    cli.add_command(demo)
