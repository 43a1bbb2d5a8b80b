"""`appeals audit REF`: the audit trail of a case (table, JSON, CSV or HTML), and with `--verify`
the chain verification and the cross-check of Temporal's history against the store (store.audit,
through the desk). Auditors sign in like everyone else for these.

`appeals audit store` verifies the whole store (or `--case REF`) against the latest signed
checkpoint with the public keys only: it reads the database and the checkpoint directory, needs no
cipher key, no signing key and nobody signed in (it shows no personal data: references, versions
and hashes). `appeals audit public-key` prints the public key(s) for auditors; `appeals audit
checkpoint` writes a checkpoint now (the worker writes them at an interval and when a case
closes)."""

from __future__ import annotations

from typing import Any

import click

from cli.common import (
    VerificationFailed,
    choice,
    clean,
    emit_json,
    env_of,
    json_option,
    one_line,
    run,
    table,
    when,
)
from desk.export import trail_csv, trail_entries, trail_html, trail_json


class _AuditGroup(click.Group):
    """`appeals audit REF ...` stays the trail command; `appeals audit store|public-key|checkpoint`
    are subcommands (a reference never has those names)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["trail", *args]
        return super().parse_args(ctx, args)


@click.group("audit", cls=_AuditGroup, invoke_without_command=False,
             context_settings={"help_option_names": ["-h", "--help"]})
def audit() -> None:
    """The audit trail of a case (`appeals audit REF`), and the store's verification against the
    signed checkpoints (`appeals audit store`)."""


@audit.command("trail", hidden=True)
@click.argument("ref", metavar="REF")
@click.option("--format", "fmt", default="table", help="table (default), json, csv or html.")
@click.option("--verify", is_flag=True,
              help="Verify the audit chain and cross-check Temporal's history against the store "
                   "(exit 1 on any disagreement) instead of printing the trail.")
@json_option
@click.pass_context
def trail(ctx: click.Context, ref: str, fmt: str, verify: bool, as_json: bool) -> None:
    """The audit trail of a case: time, actor, event, summary."""
    from cli.common import BadInput

    fmt = "json" if as_json else fmt
    choice(fmt, ("table", "json", "csv", "html"), "--format")
    if fmt in ("csv", "html") and verify:
        raise BadInput("--verify", "prints a table or JSON, not csv or html")
    env = env_of(ctx)
    env.person()
    trail = env.desk.trail(ref)
    if verify:
        report = run(env.desk.verify(ref))
        if fmt == "json":
            emit_json(report)
        else:
            click.echo(clean(report["chain"]["text"]))
            click.echo(clean(report["history"]["text"]))
            click.echo("OK" if report["ok"] else "FAILED")
        if not report["ok"]:
            raise SystemExit(VerificationFailed.code)
        return
    entries = trail_entries(trail)
    if fmt == "json":
        emit_json(trail_json(ref, entries))
    elif fmt == "csv":
        click.echo(trail_csv(entries), nl=False)
    elif fmt == "html":
        click.echo(trail_html(ref, entries))
    else:
        table([[e["version"], when(e["time"]), e["actor"], e["event"], e["summary"]]
               for e in entries], ["v", "time (UTC)", "actor", "event", "summary"])


def _public_keys(ctx: click.Context, keys_file: str | None) -> Any:
    from pathlib import Path

    from cli.common import BadInput
    from store.signing import ChainKeys, SigningKeyError, read_public_keys
    from worker.keys import KeyMaterialError

    settings = env_of(ctx).settings
    try:
        if keys_file is not None:
            return ChainKeys.of(read_public_keys(Path(keys_file), setting="--public-keys"))
        return settings.chain_keys()
    except (SigningKeyError, KeyMaterialError) as exc:
        raise BadInput("--public-keys" if keys_file else "settings", one_line(str(exc))) from None


@audit.command("store")
@click.option("--case", "ref", metavar="REF", default=None, help="Verify this case only.")
@click.option("--public-keys", "keys_file", metavar="FILE", default=None,
              help="File of the public keys to accept (default: APPEALS_CHAIN_PUBLIC_KEYS_FILE, "
                   "else the public key of the chain signing key).")
@click.option("--checkpoints", "directory", metavar="DIR", default=None,
              help="Checkpoint directory (default: APPEALS_CHECKPOINT_DIR).")
@json_option
@click.pass_context
def store_command(ctx: click.Context, ref: str | None, keys_file: str | None,
                  directory: str | None, as_json: bool) -> None:
    """Verify every chain (links and signatures) against the latest signed checkpoint, with the
    public keys only (exit 1 naming case and version on any failure)."""
    from pathlib import Path

    from sqlalchemy.exc import SQLAlchemyError

    from cli.common import BadInput, Unreachable
    from domain.case import case_id
    from domain.intake import reference as check_reference
    from store.app import verifier_without_key
    from store.checkpoints import verify_store

    env = env_of(ctx)
    keys = _public_keys(ctx, keys_file)
    target = None
    if ref is not None:
        try:
            check_reference(ref)
        except ValueError:
            raise BadInput("--case", "not a case reference") from None
        target = str(case_id(ref))
    folder = Path(directory) if directory else env.settings.checkpoint_dir
    try:
        verifier = verifier_without_key(env.settings.database_url, keys)
        report = verify_store(verifier.engine, verifier.recorder, keys, folder, case_id=target)
    except SQLAlchemyError:
        raise Unreachable(f"event store not readable at {env.database_shown()}") from None
    if as_json:
        emit_json({"ok": report.ok, "checkpoint": report.checkpoint, "chains": report.chains,
                   "events": report.events, "failures": report.failures, "lines": report.lines,
                   "unsigned_only_by_checkpoint": report.unsigned_only_by_checkpoint})
    else:
        for line in report.lines:
            click.echo(clean(line))
        click.echo(f"{report.chains} chains, {report.events} events: "
                   + ("OK" if report.ok else f"FAILED ({len(report.failures)})"))
    if not report.ok:
        raise SystemExit(VerificationFailed.code)


@audit.command("public-key")
@click.pass_context
def public_key(ctx: click.Context) -> None:
    """Print the public key(s) that verify the chain and the checkpoints, for auditors (a file
    for APPEALS_CHAIN_PUBLIC_KEYS_FILE or `appeals audit store --public-keys`)."""
    click.echo(_public_keys(ctx, None).export(), nl=False)


@audit.command("checkpoint")
@click.pass_context
def checkpoint(ctx: click.Context) -> None:
    """Write a signed checkpoint of every chain's head now (refused, exit 1, when the store went
    back on the previous checkpoint)."""
    from cli.common import BadInput
    from store.checkpoints import CheckpointError, write_checkpoint
    from worker.keys import KeyMaterialError

    env = env_of(ctx)
    store = env.store
    try:
        signer = env.settings.chain_signer()
    except KeyMaterialError as exc:
        raise BadInput("settings", one_line(str(exc))) from None
    try:
        path = write_checkpoint(store.engine, store.recorder, signer, store.chain_keys,
                                env.settings.checkpoint_dir)
    except CheckpointError as exc:
        raise VerificationFailed(one_line(str(exc))) from None
    click.echo(str(path))
