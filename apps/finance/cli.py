"""``trillium finance``: transaction fraud scoring commands (see the finance issue)."""

import typer

app = typer.Typer(help="Credit-card fraud scoring (no commands in this release yet).", no_args_is_help=True)
