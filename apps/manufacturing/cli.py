"""``trillium manufacturing``: visual defect detection commands."""

import typer

app = typer.Typer(help="Visual defect detection (no commands in this release yet).", no_args_is_help=True)
