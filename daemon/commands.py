"""What a command of ``ingestd`` is, and what every command shares.

Each command module (roles.py, operate.py, setup_commands.py,
dlq_commands.py, partition_commands.py, and cli.py for ``completion``)
declares its commands next to their handlers, in a list named ``COMMANDS``;
cli.py builds the parser from those lists and calls the handler of the
command given.

A command module imports only light modules at its top (no broker, database
or schema library, no pyarrow, nothing of ``ingestd.consumers``): every one is
imported for ``ingestd --help`` and for the completion script a shell loads at
each start. Handlers import what they need.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .table import printable

Handler = Callable[[Any, argparse.Namespace], int]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command without arguments of its own (the global options are added to every command)."""


@dataclass(frozen=True)
class Command:
    """One command: ``name`` is its words ("dlq replay"); the command of its
    first words ("dlq") must be declared before it.

    ``handler(config, args)`` returns the exit status; ``config`` is None
    when ``needs_config`` is false. A command without a handler is a group:
    one of its actions must be given. A command with a handler and actions
    (``partitions``) runs when no action is given.

    ``long_running(args)``: the command runs until stopped, logging on
    stdout at the configured level; the others keep stdout for their output
    and log warnings on stderr."""

    name: str
    help: str
    description: str
    handler: Handler | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    needs_config: bool = True
    long_running: Callable[[argparse.Namespace], bool] = lambda args: False

    @property
    def words(self) -> list[str]:
        return self.name.split()

    @property
    def actions_dest(self) -> str:
        """Where argparse puts the action given to this command (a group's)."""
        return f"{self.name.replace(' ', '_').replace('-', '_')}_command"


def always(args: argparse.Namespace) -> bool:
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(doc: Any) -> None:
    """``--json`` output: indented, times in ISO 8601, anything else as its text."""
    print(json.dumps(doc, default=_json_default, indent=2))


def say_error(message: str) -> None:
    """One line on stderr, ``ingestd: message``, safe for a terminal."""
    print(printable(f"ingestd: {message}"), file=sys.stderr)


def progress_bar(iterable: Any = None, *, quiet: bool, **options: Any) -> Any:
    """A progress bar on stderr for long commands: drawn only on a terminal
    (tqdm's ``disable=None``) and never when ``quiet``. tqdm's monitor thread
    is turned off: it would outlive the command in the process that ran it
    (a test, a script importing the CLI) only to retune how often a bar redraws."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    return tqdm(iterable, file=sys.stderr, disable=True if quiet else None, **options)

