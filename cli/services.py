"""`appeals worker`: the one command that acts for no person (it runs workflows and activities;
every decision it records was signed by the door a person signed in to)."""

from __future__ import annotations

import asyncio

import click

from cli.common import STATE


@click.command("worker")
def worker() -> None:
    """Run a worker only (production: as many as needed); Ctrl-C stops it. Needs no sign-in."""
    from worker.main import main as worker_main
    STATE["temporal"] = True
    asyncio.run(worker_main())
