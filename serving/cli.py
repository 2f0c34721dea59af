"""Commands of the serving package (registered by crm_predict.cli)."""

import typer

app = typer.Typer(no_args_is_help=True)
