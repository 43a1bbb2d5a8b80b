"""`appeals keys ...`: the event store's master key (docs/operations.md, Keys and erasure).

`rotate-master` re-wraps every case's data key under the current master key, after the operator
has made the new key current (APPEALS_EVENT_CIPHER_KEY or its file) and moved the old one into
APPEALS_EVENT_CIPHER_PREVIOUS_KEYS. Events are not re-encrypted. Whoever holds the master keys may
run it (it reads nothing personal and needs no sign-in, like `appeals worker`).
"""

from __future__ import annotations

import click

from cli.common import emit_json, env_of, json_option


@click.group()
def keys() -> None:
    """The event store's master key."""


@keys.command("rotate-master")
@json_option
@click.pass_context
def keys_rotate_master(ctx: click.Context, as_json: bool) -> None:
    """Re-wrap every case's data key under the current master key (after a rotation)."""
    store = env_of(ctx).store
    count = store.rotate_master_key()
    if as_json:
        emit_json({"rewrapped": count, "master_key_id": store.keys.masters.current_id})
    else:
        click.echo(f"{count} data keys re-wrapped under master key "
                   f"{store.keys.masters.current_id}; the previous master keys may be removed "
                   "once no event written before per-case keys needs them "
                   "(docs/operations.md)")
