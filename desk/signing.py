"""The doors' Temporal client signs every case opening and every decision it sends.

A client interceptor: before a case workflow is started or an update is sent, it issues an
assertion (desk.assertions) for the signed-in person, bound to the case (the workflow id), the
decision (the update's name) and the update id (chosen here when the caller did not), and puts it
into the input's `assertion` field. Workers refuse what carries no valid assertion.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from temporalio.client import (
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)

from desk.assertions import OPEN, issue

# Who is signing: (user name, roles) for an input, or None to send it unsigned (it is refused).
Identity = Callable[[Any], "tuple[str, list[str]] | None"]


class DecisionSigner(Interceptor):
    def __init__(self, key: bytes, identity: Identity) -> None:
        self.key, self.identity = key, identity

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Signing(next, self)

    def sign(self, arg: Any, case: str, decision: str, update: str) -> Any:
        if not dataclasses.is_dataclass(arg) or isinstance(arg, type) \
                or not hasattr(arg, "assertion"):
            return arg
        who = self.identity(arg)
        if who is None:
            return arg
        user, roles = who
        token = issue(self.key, user=user, roles=roles, case=case, decision=decision,
                      update=update)
        return dataclasses.replace(arg, assertion=token)


class _Signing(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, signer: DecisionSigner) -> None:
        super().__init__(next)
        self.signer = signer

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        if input.args:
            decision, update = OPEN
            input.args = [self.signer.sign(input.args[0], input.id, decision, update),
                          *input.args[1:]]
        return await super().start_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput
                                    ) -> WorkflowUpdateHandle[Any]:
        if input.args:
            input.update_id = input.update_id or str(uuid.uuid4())
            input.args = [self.signer.sign(input.args[0], input.id, input.update,
                                           input.update_id), *input.args[1:]]
        return await super().start_workflow_update(input)
