"""The worker process: settings, the one data converter, the client, the activities, the worker.

Run it with `python -m worker` (settings from APPEALS_* variables). Everything is built once here
and handed to the activities' constructors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker

from activities.case import CaseConfig
from activities.directories import DirectoryFileError, load_address_book, load_fund_directory
from activities.mail import Mailer
from activities.messages import Composer
from activities.tracks import TrackActivities
from domain.addressbook import COUNTRY_ROLES, AddressBook
from store.app import CaseStore
from store.checkpoints import Checkpointer
from store.recorder import SchemaNotReady
from worker.client import connect, data_converter, runtime
from worker.keys import KeyMaterialError
from worker.search import register_search_attributes
from worker.settings import Settings, error_line, load_settings
from workflows.case import CaseWorkflow
from workflows.tracks import TrackedCaseWorkflow

__all__ = ["connect", "data_converter", "runtime"]  # (worker.client) and what follows

log = logging.getLogger("appeals.worker")


def case_config(settings: Settings) -> CaseConfig:
    return CaseConfig(
        mail_from=settings.mail_from,
        escalation_contacts=settings.escalation_contacts,
        rapporteur_requires_clearance=settings.rapporteur_requires_clearance,
        emergency_fund_requires_clearance=settings.emergency_fund_requires_clearance,
        address_max_age_days=settings.address_max_age_days,
        live_sending=settings.live_sending,
        deadline_overrides=settings.deadline_overrides,
        decision_key=settings.decision_signing_key(),
    )


def composer(settings: Settings) -> Composer:
    """The one composer of outgoing messages, signed as the settings say."""
    return Composer(signatory_name=settings.signatory_name,
                    signatory_organisation=settings.signatory_organisation)


class ConfigurationError(Exception):
    """The worker cannot start with this configuration; the message says what to change."""


def checked_address_book(settings: Settings) -> AddressBook:
    """The address book, refused in production while ministry or EU delegation entries are still
    the shipped stand-ins at example domains: those addresses are required settings there."""
    try:
        book = load_address_book(settings.address_book_path)
    except DirectoryFileError as exc:
        raise ConfigurationError(str(exc)) from None
    if settings.environment == "production":
        stand_ins = sorted({e.role.value for e in book.entries
                            if e.example and e.role in COUNTRY_ROLES})
        if settings.address_book_path is None or stand_ins:
            raise ConfigurationError(
                "production needs APPEALS_ADDRESS_BOOK_PATH naming an address book with real "
                "ministry and EU delegation addresses (stand-ins found for: "
                f"{', '.join(stand_ins) or 'all'})")
    return book


def store_for(settings: Settings) -> CaseStore:
    """The event store as the processes that write it open it: with the cipher key and the chain
    signing key (and the public keys of rotated signing keys)."""
    store = CaseStore(settings.database_url, settings.event_store_cipher_key(),
                      signer=settings.chain_signer(), public_keys=settings.chain_public_keys())
    store.checkpoint_dir = settings.checkpoint_dir
    return store


def checkpointer(settings: Settings, store: CaseStore) -> Checkpointer:
    """Writes the store's checkpoints into `checkpoint_dir`; also installed as the store's
    `after_close` hook, so that a checkpoint follows each case's close."""
    signer = settings.chain_signer()
    writer = Checkpointer(store.engine, store.recorder, signer,
                          signer.verifier(settings.chain_public_keys()), settings.checkpoint_dir)
    store.after_close = writer.after_close
    return writer


async def write_checkpoints(writer: Checkpointer, interval: float, stop: asyncio.Event) -> None:
    """A checkpoint now and then every `interval` seconds until `stop` (the exposure window)."""
    while not stop.is_set():
        await asyncio.to_thread(writer.write, "interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def build_activities(settings: Settings, store: CaseStore | None = None) -> TrackActivities:
    book = checked_address_book(settings)
    store = store or store_for(settings)
    return TrackActivities(store, Mailer.from_settings(settings), book, load_fund_directory(),
                           composer(settings), case_config(settings))


def build_worker(client: Client, settings: Settings, activities: TrackActivities,
                 **options: Any) -> Worker:
    options.setdefault("max_cached_workflows", settings.max_cached_workflows)
    # Cases opened before per-action tracks finish under their own workflow type (UrgentCase);
    # every new case is an UrgentCaseTracks.
    return Worker(client, task_queue=settings.task_queue,
                  workflows=[TrackedCaseWorkflow, CaseWorkflow],
                  activities=activities.all(), **options)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
        activities = build_activities(settings)
    except (ValidationError, ConfigurationError, KeyMaterialError, SchemaNotReady) as exc:
        # A clear message and exit status 2, never a traceback (and never a secret's value:
        # the settings hide input values in their errors).
        print(f"worker: cannot start: {error_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    client = await connect(settings, with_metrics=True)
    await register_search_attributes(client)
    worker = build_worker(client, settings, activities)
    writer = checkpointer(settings, activities.store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s", settings.task_queue)
    checkpoints = asyncio.create_task(
        write_checkpoints(writer, settings.checkpoint_interval_seconds, stop))
    async with worker:
        await stop.wait()
    await checkpoints
    activities.store.close()


if __name__ == "__main__":
    asyncio.run(main())
