"""`appeals report`: the figures across cases for a period and a country (desk.reports), as a
table, CSV, JSON or a printable HTML page with the charts. Small counts are shown as "<3" in every
format; no name appears. For a head, an auditor or a case officer, signed in."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from cli.common import BadInput, env_of
from desk import reports
from desk.errors import InvalidRequest

FORMATS = ("table", "csv", "json", "html")


@click.command("report")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First day of the period (inclusive).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last day of the period (inclusive).")
@click.option("--year", metavar="YYYY", help="A calendar year instead of --from/--to.")
@click.option("--quarter", metavar="YYYYQn", help="A quarter instead of --from/--to, e.g. 2026Q3.")
@click.option("--country", metavar="CC", help="Only cases of this country (ISO code, e.g. KE).")
@click.option("--format", "fmt", default="table", show_default=True,
              help="table, csv, json or html (a printable page with charts: print it to PDF).")
@click.pass_context
def report(ctx: click.Context, start: str | None, end: str | None, year: str | None,
           quarter: str | None, country: str | None, fmt: str) -> None:
    """Figures across cases: cases opened and closed, threat types, rights affected, at-risk
    groups, actions per channel, responses, time to first dispatch, outcomes, reprisals, funds.
    Without a period: this year so far."""
    if fmt not in FORMATS:
        raise BadInput("--format", f"must be one of {', '.join(FORMATS)}")
    try:
        period = reports.parse_period(start=start, end=end, year=year, quarter=quarter)
        code = reports.parse_country(country)
    except InvalidRequest as exc:
        raise BadInput(exc.field, exc.reason) from None
    env = env_of(ctx)
    person = env.person()
    built = reports.build(env.store, person.username, period, code, now=datetime.now(UTC))
    if fmt == "json":
        click.echo(reports.to_json(built))
    elif fmt == "csv":
        click.echo(reports.to_csv(built), nl=False)
    elif fmt == "html":
        from desk.report_html import standalone_html
        click.echo(standalone_html(built))
    else:
        click.echo(reports.to_table(built), nl=False)
