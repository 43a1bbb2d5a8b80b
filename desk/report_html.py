"""A report as one self-contained HTML page (the command line's `--format html`): the web's
report template, the web's style sheet inline and the charts embedded as PNG data, so that the file
opens and prints (to PDF) anywhere, offline. Names never appear: only the report's figures."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from desk.charts import CHARTS, chart_png
from desk.reports import DECISIONS, Report

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "web"
STYLE = ROOT / "web" / "static" / "app.css"


def when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "" if value is None else str(value)


@cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    return env


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Urgent appeals: report {{ report.scope }}</title><style>{{ style }}</style></head>
<body class="printable"><main id="content"><h1>Urgent appeals: report</h1>
<p id="report-scope">{{ report.scope }} · built {{ report.built_at|when }}</p>
{% include "report_body.html" %}
</main></body></html>
"""


def standalone_html(report: Report) -> str:
    images = {name: "data:image/png;base64," + base64.b64encode(chart_png(report, name)).decode()
              for name in CHARTS}
    style = Markup(STYLE.read_text(encoding="utf-8").replace("</", "<\\/"))  # noqa: S704 - our own file
    return _env().from_string(PAGE).render(report=report, charts=CHARTS, decisions=DECISIONS,
                                           chart_src=images.__getitem__, style=style)
