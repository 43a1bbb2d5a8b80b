"""A bare Temporal workflow of the same shape as a case going through the pipeline.

Per case the pipeline (workflows/case.py) runs, for the scripted path of the benchmark:

- 1 activity to open the case (`open_case`);
- 5 updates (verification, 2 consents, 2 clearances), each running 1 activity (`apply_command`);
- 2 activities to send the two messages (`dispatch`).

That is 5 updates and 8 activities. The bare workflow does exactly that and nothing else: no
domain logic, no store, no mail, no payload encryption, no search attributes. Its activities return
a small dict, like the pipeline's activities return the case summary. Updates are applied one at a
time under a lock, as in the case workflow.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

BARE_WORKFLOW = "BareCase"
UPDATES_PER_CASE = 5
OPEN_ACTIVITIES = 1
DISPATCH_ACTIVITIES = 2
ACTIVITIES_PER_CASE = OPEN_ACTIVITIES + UPDATES_PER_CASE + DISPATCH_ACTIVITIES  # 8


@activity.defn(name="bare_step")
async def bare_step(reference: str, step: str, version: int) -> dict[str, Any]:
    return {"reference": reference, "step": step, "version": version + 1, "stage": "ok"}


@workflow.defn(name=BARE_WORKFLOW)
class BareWorkflow:
    @workflow.init
    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.version = 0
        self.decisions = 0
        self.lock = asyncio.Lock()

    async def _step(self, step: str) -> None:
        summary: dict[str, Any] = await workflow.execute_activity(
            bare_step, args=[self.reference, step, self.version],
            start_to_close_timeout=timedelta(seconds=30))
        self.version = int(summary["version"])

    @workflow.run
    async def run(self, reference: str) -> int:
        async with self.lock:
            await self._step("open")
        await workflow.wait_condition(lambda: self.decisions >= UPDATES_PER_CASE)
        for action in range(DISPATCH_ACTIVITIES):
            async with self.lock:
                await self._step(f"dispatch-{action}")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.version

    @workflow.update
    async def decide(self, decision: str) -> int:
        async with self.lock:
            await self._step(decision)
            self.decisions += 1
        return self.version
