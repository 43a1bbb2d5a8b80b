"""Search attributes that let Temporal's own UI and CLI find cases.

Temporal stores search attributes in plain text and indexes them, so they carry only the stage, the
risk level and the next deadline: never names, countries or anything else from the case.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType, SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

CASE_STAGE: SearchAttributeKey[str] = SearchAttributeKey.for_keyword("CaseStage")
"""The case's stage (intake, verification, consent, ...)."""

CASE_RISK: SearchAttributeKey[str] = SearchAttributeKey.for_keyword("CaseRisk")
"""The verified risk level (critical, high, medium, low), or the urgency before verification."""

CASE_NEXT_DEADLINE: SearchAttributeKey[datetime] = SearchAttributeKey.for_datetime(
    "CaseNextDeadline"
)
"""When the next human step escalates if nothing happens."""

CASE_SEARCH_ATTRIBUTES: Sequence[SearchAttributeKey[str] | SearchAttributeKey[datetime]] = (
    CASE_STAGE,
    CASE_RISK,
    CASE_NEXT_DEADLINE,
)
"""Every custom search attribute, for registration with the server (dev server, operator CLI)."""


async def register_search_attributes(client: Client) -> None:
    """Define the case search attributes in the client's namespace (idempotent).

    The dev server can also take them as `--search-attribute` flags; production registers them
    once with the operator CLI. The worker calls this at start-up so that a fresh server works.
    """
    types = {
        SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        SearchAttributeIndexedValueType.DATETIME: IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    }
    for key in CASE_SEARCH_ATTRIBUTES:
        # One at a time: "already exists" for one must not keep the others out. (The
        # time-skipping test server has no List call, so asking first is not an option.)
        try:
            await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={key.name: types[key.indexed_value_type]}))
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
