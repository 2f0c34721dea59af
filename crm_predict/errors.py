"""Errors every entry point turns into a clear message instead of a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """Bad input from a user (CLI argument, CSV, request): shown as one message, nothing written."""


def print_error(exc: Exception) -> None:
    """One unwrapped line a user (or a script grepping it) can read whole."""
    from rich.console import Console
    from rich.markup import escape

    Console().print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)


def user_errors_exit_2(command: Callable[..., None]) -> Callable[..., None]:
    """A CLI command that prints a UserError the way ``crm_predict.cli.main`` does and exits 2
    (also under typer's test runner, where ``main`` is not in the way)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        import typer

        try:
            command(*args, **kwargs)
        except UserError as exc:
            print_error(exc)
            raise typer.Exit(2) from None

    return run
