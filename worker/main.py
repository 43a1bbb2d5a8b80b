"""The worker process: settings, the one data converter, the client, the activities, the worker.

Run it with `python -m worker` (settings from APPEALS_* variables). Everything is built once here
and handed to the activities' constructors.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker

from activities.case import CaseActivities, CaseConfig
from activities.directories import load_address_book
from activities.mail import Mailer
from activities.render import Renderer
from store.app import CaseStore
from worker.codec import make_data_converter
from worker.search import register_search_attributes
from worker.settings import Settings, load_settings
from workflows.case import CaseWorkflow

log = logging.getLogger("appeals.worker")


def data_converter(settings: Settings) -> DataConverter:
    """The converter every client, worker, test and replay uses (encrypting codec included)."""
    return make_data_converter(settings.codec_keyring())


async def connect(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=data_converter(settings))


def case_config(settings: Settings) -> CaseConfig:
    return CaseConfig(
        mail_from=settings.mail_from,
        escalation_contacts=settings.escalation_contacts,
        rapporteur_requires_clearance=settings.rapporteur_requires_clearance,
        emergency_fund_requires_clearance=settings.emergency_fund_requires_clearance,
        address_max_age_days=settings.address_max_age_days,
    )


def build_activities(settings: Settings, store: CaseStore | None = None) -> CaseActivities:
    store = store or CaseStore(settings.database_url, settings.event_store_cipher_key())
    return CaseActivities(store, Mailer.from_settings(settings),
                          load_address_book(settings.address_book_path), Renderer(),
                          case_config(settings))


def build_worker(client: Client, settings: Settings, activities: CaseActivities,
                 **options: Any) -> Worker:
    return Worker(client, task_queue=settings.task_queue, workflows=[CaseWorkflow],
                  activities=activities.all(), **options)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    client = await connect(settings)
    await register_search_attributes(client)
    activities = build_activities(settings)
    worker = build_worker(client, settings, activities)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s", settings.task_queue)
    async with worker:
        await stop.wait()
    activities.store.close()


if __name__ == "__main__":
    asyncio.run(main())
