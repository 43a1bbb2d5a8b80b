"""`appeals audit REF`: the audit trail of a case (table, JSON, CSV or HTML), and with `--verify`
the chain verification and the cross-check of Temporal's history against the store (store.audit,
through the desk). Auditors sign in like everyone else."""

from __future__ import annotations

import click

from cli.common import (
    VerificationFailed,
    choice,
    clean,
    emit_json,
    env_of,
    json_option,
    run,
    table,
    when,
)
from desk.export import trail_csv, trail_entries, trail_html, trail_json


@click.command("audit")
@click.argument("ref", metavar="REF")
@click.option("--format", "fmt", default="table", help="table (default), json, csv or html.")
@click.option("--verify", is_flag=True,
              help="Verify the audit chain and cross-check Temporal's history against the store "
                   "(exit 1 on any disagreement) instead of printing the trail.")
@json_option
@click.pass_context
def audit(ctx: click.Context, ref: str, fmt: str, verify: bool, as_json: bool) -> None:
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
