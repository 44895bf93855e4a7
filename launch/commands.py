"""Shell commands of a launch: built as argument lists, printed (`--dry_run`) or run in order."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

Command = list[str]


def render(command: Command) -> str:
    """One command as a shell line (quoted so that it can be pasted)."""
    return " ".join(shlex.quote(part) for part in command)


def remote(script: Sequence[str]) -> str:
    """Shell lines joined for one `ssh --command` (stops at the first failure)."""
    return " && ".join(script)


def execute(commands: Sequence[Command], *, dry_run: bool) -> list[str]:
    """Prints every command; runs them in order unless `dry_run` (stops at a failure)."""
    lines = [render(c) for c in commands]
    for command, line in zip(commands, lines, strict=True):
        print(line, flush=True)
        if not dry_run:
            subprocess.run(command, check=True)
    return lines


def from_flags(build: Callable[..., Any], names: Sequence[str]) -> Any:
    """`build(**{name: --name})`; its ValueError becomes a usage error naming the problem."""
    try:
        return build(**{name: flags.FLAGS[name].value for name in names})
    except ValueError as e:
        raise app.UsageError(str(e)) from None
