"""The web's report pages (issue 14): `/reports` (period and country by GET query, the charts as
same-origin PNG images drawn on the server, no script), `/reports/print` (the printable view, to
print to PDF for the annual report), `/reports/chart/{name}.png`, `/reports/export.{csv,json}`,
and the head's `/dashboard`. Reports are for heads, auditors and case officers
(desk.reports.REPORT_ROLES), the dashboard for heads; both read the store only (desk.reports,
desk.dashboard). No page carries a name: references, codes and suppressed counts only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from desk import reports
from desk.charts import CHARTS, chart_png
from desk.dashboard import DASHBOARD_ROLES, LIST_LIMIT, RISKS, STAGES, build_dashboard
from desk.errors import InvalidRequest
from domain.countries import COUNTRIES

if TYPE_CHECKING:
    from web.app import Ctx, WebApp

# A report is built once per query and reused for its page's four chart images (and a reload)
# for this long; a newer version of any case is picked up after it.
REUSE_SECONDS = 20.0
NAMES = {"from": "from", "to": "to", "year": "year", "quarter": "quarter"}


def duration(value: Any) -> str:
    if not isinstance(value, timedelta):
        return "—"
    hours = value.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.1f} days"


class ReportPages:
    def __init__(self, web: WebApp) -> None:
        self.web = web
        self._recent: dict[tuple[Any, ...], tuple[float, reports.Report]] = {}
        web.jinja.filters["duration"] = duration

    def _query(self, request: Request) -> tuple[dict[str, str], reports.Period, str | None]:
        q = request.query_params
        form = {k: str(q.get(k) or "").strip() for k in ("from", "to", "year", "quarter", "country")}
        period = reports.parse_period(start=form["from"] or None, end=form["to"] or None,
                                      year=form["year"] or None, quarter=form["quarter"] or None,
                                      today=self.web.clock().date(), names=NAMES)
        country = reports.parse_country(form["country"] or None, "country")
        form["from"], form["to"] = period.start.isoformat(), period.end.isoformat()
        form["country"] = country or ""
        return form, period, country

    async def _report(self, ctx: Ctx, period: reports.Period, country: str | None) -> reports.Report:
        key = (ctx.username, period, country)
        now = time.monotonic()
        self._recent = {k: v for k, v in self._recent.items() if now - v[0] < REUSE_SECONDS}
        hit = self._recent.get(key)
        if hit is not None:
            return hit[1]
        built = await asyncio.to_thread(reports.build, self.web.store, ctx.username, period,
                                        country, now=self.web.clock())
        self._recent[key] = (now, built)
        return built

    async def page(self, request: Request, ctx: Ctx, form: Any) -> Response:
        printable = request.url.path.endswith("/print")
        error, code = None, 200
        try:
            shown, period, country = self._query(request)
        except InvalidRequest as exc:
            error, code = f"{exc.field.capitalize()}: {exc.reason}. This year is shown instead.", 422
            period = reports.parse_period(today=self.web.clock().date())
            country = None
            shown = {"from": period.start.isoformat(), "to": period.end.isoformat(), "country": ""}
        report = await self._report(ctx, period, country)
        query = urlencode({"from": period.start.isoformat(), "to": period.end.isoformat(),
                           **({"country": country} if country else {})})
        return self.web.render(
            request, ctx, "report.html", code, report=report, charts=CHARTS,
            decisions=reports.DECISIONS, printable=printable, form=shown, error=error,
            query=query, chart_src=lambda name: f"/reports/chart/{name}.png?{query}",
            countries=sorted(COUNTRIES.items(), key=lambda kv: kv[1]))

    async def chart(self, request: Request, ctx: Ctx, form: Any) -> Response:
        name = request.path_params["name"]
        if name not in CHARTS:
            return self.web.not_found(request, ctx, "This chart")
        _, period, country = self._query(request)  # a bad query: the desk error's page (422)
        report = await self._report(ctx, period, country)
        png = await asyncio.to_thread(chart_png, report, name)
        return Response(png, media_type="image/png")

    async def export(self, request: Request, ctx: Ctx, form: Any) -> Response:
        kind = request.path_params["format"]
        if kind not in ("csv", "json"):
            return self.web.not_found(request, ctx, "This export")
        _, period, country = self._query(request)
        report = await self._report(ctx, period, country)
        name = f"report-{period.start.isoformat()}-{period.end.isoformat()}-{country or 'all'}.{kind}"
        disposition = {"content-disposition": f'attachment; filename="{name}"'}
        if kind == "json":
            return Response(reports.to_json(report), media_type="application/json",
                            headers=disposition)
        return Response(reports.to_csv(report), media_type="text/csv; charset=utf-8",
                        headers=disposition)

    async def dashboard(self, request: Request, ctx: Ctx, form: Any) -> Response:
        d = await asyncio.to_thread(build_dashboard, self.web.store, self.web.clock())
        return self.web.render(request, ctx, "dashboard.html", d=d, stages=STAGES, risks=RISKS,
                               limit=LIST_LIMIT)


def report_routes(web: WebApp, page: Callable[..., Callable[[Request], Awaitable[Response]]]
                  ) -> list[Route]:
    pages = ReportPages(web)
    staff = sorted(reports.REPORT_ROLES)
    return [
        Route("/reports", page(pages.page, staff), methods=["GET"]),
        Route("/reports/print", page(pages.page, staff), methods=["GET"]),
        Route("/reports/chart/{name:str}.png", page(pages.chart, staff), methods=["GET"]),
        Route("/reports/export.{format:str}", page(pages.export, staff), methods=["GET"]),
        Route("/dashboard", page(pages.dashboard, sorted(DASHBOARD_ROLES)), methods=["GET"]),
    ]
