"""Command-line options that every vertical's batch command shares: one wording, one default.

A vertical's job command (``finance score``, ``manufacturing inspect``, ``medical analyze-batch``,
``medical records batch``) takes the same engine options; declaring them here keeps their
names, defaults and help identical, so a user learns them once.
"""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["address_option", "engine_option", "max_failed_chunks_option", "workers_option"]


def engine_option() -> Any:
    return typer.Option("local", "--engine", help="local (this process) or ray (a Ray cluster; needs the ray "
                                                  "extra; --output must be a directory).")


def address_option() -> Any:
    return typer.Option(None, "--address", help="Ray cluster to join (e.g. auto, host:6379; default "
                                                "RAY_ADDRESS, else a local Ray).")


def workers_option() -> Any:
    return typer.Option(None, "--workers", help="Ray actors (default: one per cluster CPU).")


def max_failed_chunks_option() -> Any:
    return typer.Option(None, "--max-failed-chunks", help="Stop the job once the model has failed on this many "
                        "chunks of a run (a broken model, not bad records); they are redone after the fix. "
                        "0: never stop; default 3.")
