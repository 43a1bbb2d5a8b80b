"""The one way to a Temporal client (worker, web interface, CLI) and the one data converter.

Apart from worker.main so that a door connects without importing the workflows and activities
(the command line answers sooner); worker.main re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.client import Client, Interceptor
from temporalio.converter import DataConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from worker.codec import make_data_converter
from worker.settings import Settings


def data_converter(settings: Settings) -> DataConverter:
    """The converter every client, worker, test and replay uses (encrypting codec included)."""
    return make_data_converter(settings.codec_keyring())


def runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime exporting SDK metrics for Prometheus when a metrics port is set."""
    if settings.metrics_port is None:
        return None
    address = f"{settings.metrics_host}:{settings.metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))


async def connect(settings: Settings, *, with_metrics: bool = False,
                  interceptors: Sequence[Interceptor] = ()) -> Client:
    """The one way to a Temporal client (worker, web interface, CLI): the namespace, the encrypting
    converter and, as the settings say, TLS with the client certificate. The doors pass their
    decision signer (desk.signing) as an interceptor."""
    options: dict[str, Any] = {"interceptors": list(interceptors)}
    if with_metrics and (rt := runtime(settings)) is not None:
        options["runtime"] = rt
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace,
                                data_converter=data_converter(settings),
                                tls=settings.temporal_tls_config(), **options)
