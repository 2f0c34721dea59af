"""``crm-predict export tags|tasks|predictions --out FILE.csv`` (registered by ``crm_predict.cli``):
results with the entities' external ids, to load back into the source CRM."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup

from crm_predict.core.errors import UserError, print_error, user_errors_exit_2

console = Console()
KINDS = ("tags", "tasks", "predictions")


class ExportKinds(TyperGroup):
    """The export sub-commands; an unknown kind is the CLI's usual one-line error (exit 2)."""

    def resolve_command(self, ctx, args):
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            print_error(UserError(f"unknown export {args[0]!r}; known: {', '.join(KINDS)}"))
            raise typer.Exit(2)
        return super().resolve_command(ctx, args)


export_app = typer.Typer(
    cls=ExportKinds,
    no_args_is_help=True,
    help="Tags, tasks and the prediction log as CSV, with external ids beside internal ids.",
)

OUT = typer.Option(..., "--out", help="CSV file to write (replaced only when complete).")
ENTITY_TYPE = typer.Option(
    None, "--entity-type", help="Only this entity type: lead, deal, contact, customer, account."
)


def _export(ctx: typer.Context, kind: str, out: Path, entity_type: str | None, **filters) -> None:
    """Check the arguments (before any I/O), then stream the export on a session of the store."""
    from crm_predict.crm_store import export
    from crm_predict.crm_store.db import make_engine, session_factory, upgrade

    export.check_entity_type(entity_type)
    export.check_target(out)
    engine = make_engine(ctx.obj.crm_url)
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            write = getattr(export, f"export_{kind}")
            rows = write(session, out, entity_type=entity_type, **filters)
    finally:
        engine.dispose()
    console.print(f"{rows:,} {kind} → [bold]{out}[/]")


@export_app.command("tags")
@user_errors_exit_2
def tags_command(
    ctx: typer.Context,
    out: Path = OUT,
    entity_type: str | None = ENTITY_TYPE,
    name: str | None = typer.Option(None, "--name", help="Only tags of this name."),
) -> None:
    """Current tags: entity type, id, external id, name, value, model, version, run, scored_at."""
    _export(ctx, "tags", out, entity_type, name=name)


@export_app.command("tasks")
@user_errors_exit_2
def tasks_command(
    ctx: typer.Context,
    out: Path = OUT,
    entity_type: str | None = ENTITY_TYPE,
    status: str | None = typer.Option(None, "--status", help="Only tasks in this status."),
) -> None:
    """Every task column plus the entity's and the owner's external ids."""
    _export(ctx, "tasks", out, entity_type, status=status)


@export_app.command("predictions")
@user_errors_exit_2
def predictions_command(
    ctx: typer.Context,
    out: Path = OUT,
    entity_type: str | None = ENTITY_TYPE,
    model: str | None = typer.Option(None, "--model", help="Only predictions of this model."),
) -> None:
    """The prediction log (batch and API) with the entities' external ids."""
    _export(ctx, "predictions", out, entity_type, model_name=model)
