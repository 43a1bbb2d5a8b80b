"""`appeals outbox list|show`: the messages the embedded stack's SMTP sink kept (desk.outbox)."""

from __future__ import annotations

import click

from cli.common import BODY_CONTROL, clean, emit_json, env_of, json_option, table, when
from desk.outbox import find_message, list_messages, outbox_path


@click.group()
def outbox() -> None:
    """Messages held by the local SMTP sink of the embedded stack."""


@outbox.command("list")
@json_option
@click.pass_context
def outbox_list(ctx: click.Context, as_json: bool) -> None:
    """The messages in the sink, oldest first."""
    env = env_of(ctx)
    env.person()
    rows = list_messages(outbox_path(env.settings))
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no messages")
    else:
        table([[r["id"], when(r["date"]), r["to"], r["subject"], r["message_id"]] for r in rows],
              ["id", "date (UTC)", "to", "subject", "message-id"])


@outbox.command("show")
@click.argument("message_id", metavar="ID")
@json_option
@click.pass_context
def outbox_show(ctx: click.Context, message_id: str, as_json: bool) -> None:
    """One message (by its id in `outbox list`, or its Message-ID): headers and text."""
    env = env_of(ctx)
    env.person()
    found = find_message(outbox_path(env.settings), message_id)
    if as_json:
        emit_json(found)
        return
    for name, value in found["headers"].items():
        click.echo(clean(f"{name}: {value}"))
    click.echo("")
    click.echo(BODY_CONTROL.sub("?", found["text"].replace("\r\n", "\n")).rstrip("\n"))
