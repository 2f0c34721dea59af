"""Errors every entry point turns into a clear message instead of a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any


class UserError(Exception):
    """Bad input from a user (CLI argument, CSV, request): shown as one message, nothing written."""


def iso_time(value: str | None, error: str) -> datetime | None:
    """``value`` (ISO 8601) as a datetime, None for None; text that is not one is a UserError,
    ``error`` formatted with ``value``."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise UserError(error.format(value=value)) from None


def read_user_csv(path: Path, label: str = "file") -> Any:
    """A user's CSV as a DataFrame; a missing, unreadable, empty or header-only file is a
    UserError naming it (``label``: what the file should hold, for the message)."""
    import pandas as pd

    if not path.exists():
        raise UserError(f"{label} {str(path)!r} does not exist")
    if not path.is_file():
        raise UserError(f"{label} {str(path)!r} is not a file")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"cannot read {str(path)!r} as CSV: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {str(path)!r} as CSV: {exc}") from None
    if frame.empty:
        raise UserError(f"{str(path)!r} has a header but no rows")
    return frame


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
