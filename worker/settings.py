"""The one typed settings object, read from ``APPEALS_*`` environment variables at start-up.

Defaults suit the embedded development stack on a laptop: everything under ``var/``, keys created
on first use, mail to a local sink. Production refuses to start without real keys and contacts.
Each field's docstring is its entry in the configuration reference.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from activities.addresses import check_address, is_loopback_host
from domain.policies import DEFAULT_DEADLINES
from worker.keys import (
    KeyMaterialError,
    KeyRing,
    decode_key,
    encode_key,
    load_or_create_key_file,
    read_key_file,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from temporalio.service import TLSConfig

    from store.signing import ChainKeys, ChainSigner

ENV_PREFIX = "APPEALS_"
PLACEHOLDER_DOMAIN = "example.org"
REQUIRED_ESCALATION_LEVELS = (1, 2, 3)
# Who signs the letters on a development stack (production must name its own).
DEVELOPMENT_SIGNATORY = {
    "signatory_name": "Duty officer (development)",
    "signatory_organisation": "Urgent appeals secretariat (development)",
}
SIGNATORY_MAX_LENGTH = 120


def _env(field: str) -> str:
    """The environment variable of a field, for error messages."""
    return ENV_PREFIX + field.upper()


def _development_contacts() -> dict[int, list[str]]:
    return {
        1: [f"duty-officer@{PLACEHOLDER_DOMAIN}"],
        2: [f"head-of-secretariat@{PLACEHOLDER_DOMAIN}"],
        3: [f"board@{PLACEHOLDER_DOMAIN}"],
    }


FILE_SUFFIX = "_FILE"


class SecretFileError:
    """Stands in for a secret whose `<NAME>_FILE` could not be used; the model refuses it with
    this one-line message (a settings source cannot raise a validation error itself)."""

    def __init__(self, message: str) -> None:
        self.message = message


class SecretFilesSource(PydanticBaseSettingsSource):
    """`APPEALS_<NAME>_FILE=/run/secrets/...` for each secret setting (Docker and Kubernetes
    secrets): the file's text, without its final line break, is the setting's value. Setting a
    secret both ways is refused, so that nobody wonders which one is used."""

    def __init__(self, settings_cls: type[BaseSettings], fields: tuple[str, ...]) -> None:
        super().__init__(settings_cls)
        self.fields = fields

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in self.fields:
            variable = _env(field) + FILE_SUFFIX
            path = os.environ.get(variable, "")
            if not path:  # unset, or empty as compose writes `${VAR:-}`
                continue
            if os.environ.get(_env(field)):
                values[field] = SecretFileError(
                    f"{_env(field)} and {variable} are both set: keep only one")
                continue
            try:
                values[field] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                values[field] = SecretFileError(
                    f"{variable}: {path} cannot be read ({exc.strerror or type(exc).__name__})")
            except UnicodeDecodeError:
                values[field] = SecretFileError(f"{variable}: {path} is not UTF-8 text")
        return values


class SecretFileSettings(BaseSettings):
    """Settings whose secrets (`secret_file_fields`) may also be given as files."""

    secret_file_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments first (tests, entry points), then the files, then the environment:
        # the files come before the environment only so that a conflict between the two is seen.
        return (init_settings, SecretFilesSource(settings_cls, cls.secret_file_fields),
                env_settings, dotenv_settings, file_secret_settings)

    @model_validator(mode="before")
    @classmethod
    def _secret_files_were_read(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for value in data.values():
                if isinstance(value, SecretFileError):
                    raise ValueError(value.message)
        return data


class Settings(SecretFileSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        use_attribute_docstrings=True,
        # Validation errors would otherwise quote the rejected input, which may be a key.
        hide_input_in_errors=True,
        extra="forbid",
    )
    # Each may be given as `APPEALS_<NAME>_FILE` instead (the key files have their own settings).
    secret_file_fields = ("database_url", "database_password", "codec_keys", "smtp_password",
                          "codec_server_token", "schema_database_url", "schema_database_password",
                          "event_cipher_previous_keys")

    environment: Literal["development", "production"] = "development"
    """`development` (embedded stack, keys created on first use) or `production` (everything
    explicit)."""

    var_dir: Path = Path("var")
    """Directory for local state: the SQLite event store, generated key files, and for
    `make run` the Temporal dev server's database, the outbox of the SMTP sink and logs."""

    temporal_address: str = "127.0.0.1:7233"
    """Temporal frontend, host:port."""

    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    """Port of the Temporal web UI that `make run` starts with its dev server."""

    temporal_namespace: str = "default"
    """Temporal namespace holding the case workflows."""

    task_queue: str = "urgent-appeals"
    """Task queue the worker polls and clients start case workflows on."""

    temporal_tls: bool = False
    """Connect to Temporal over TLS. Production requires it, with a client certificate; the
    development stack's own server (`make run`) is plaintext on loopback."""

    temporal_tls_ca_file: Path | None = None
    """CA certificate (PEM) that signed the Temporal server's certificate; unset: the system's
    trusted roots."""

    temporal_tls_cert_file: Path | None = None
    """Client certificate (PEM) this process presents to Temporal (mutual TLS)."""

    temporal_tls_key_file: Path | None = None
    """Private key (PEM, not passphrase-protected) of `temporal_tls_cert_file`."""

    temporal_tls_server_name: str | None = None
    """Name the Temporal server's certificate is checked against (also sent as SNI), when it is
    not the host of `temporal_address`."""

    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['var_dir'] / 'events.sqlite'}"
    )
    """Event store URL: SQLite file (default `<var_dir>/events.sqlite`) or PostgreSQL."""

    database_password: SecretStr | None = None
    """Password of the event store's PostgreSQL user, put into `database_url` (which then names
    none): lets the password come from a file while the URL stays in the environment."""

    schema_database_url: str | None = None
    """PostgreSQL URL of the event store's schema owner, read only by `appeals store init-db`
    (which creates the tables, the append-only triggers and the grants of the application's role,
    the user of `database_url`); the worker and the web interface never use it. No password in
    it: see `schema_database_password`."""

    schema_database_password: SecretStr | None = None
    """Password of the schema owner, put into `schema_database_url`. Only the one-shot set-up
    should have it, never the worker or the web interface."""

    event_cipher_key: SecretStr | None = None
    """Event store AES key: base64 of 32 bytes. Takes precedence over the key file."""

    event_cipher_key_file: Path = Field(
        default_factory=lambda data: data["var_dir"] / "keys" / "event-store.key"
    )
    """File holding the event store key (base64, mode 0600). Created in development."""

    event_cipher_previous_keys: SecretStr | None = None
    """Previous event store master keys, comma-separated base64 (32 bytes each), kept after a
    rotation: they still unwrap the data keys not yet re-wrapped (`appeals keys rotate-master`)
    and decrypt events written before per-case keys. The current key is `event_cipher_key`
    (or its file)."""

    erasure_retention_days: int = Field(default=365, ge=0)
    """Days after a case is closed before two heads may erase it (`appeals case erase`); 0: as
    soon as it is closed."""

    decision_key_file: Path = Field(
        default_factory=lambda data: data["var_dir"] / "keys" / "decision-signing.key"
    )
    """File holding the key (base64, mode 0600) with which the doors sign each decision and the
    workers check it: held by the CLI, the web interface and the workers, never by a bare
    Temporal client. Created in development."""

    totp_key_file: Path = Field(
        default_factory=lambda data: data["var_dir"] / "keys" / "totp-secrets.key"
    )
    """File holding the key (base64, mode 0600) that encrypts the one-time-code (TOTP) secrets
    in the users table: held by the doors that sign people in (the web interface, `appeals
    login`), never by the workers. Created in development; required in production."""

    codec_keys: SecretStr | None = None
    """Temporal payload keys as `id:base64,...`: the first encrypts, the others only decrypt data
    written before a rotation. Takes precedence over the key file."""

    codec_key_file: Path = Field(
        default_factory=lambda data: data["var_dir"] / "keys" / "payload-codec.key"
    )
    """File holding one Temporal payload key (base64, mode 0600). Created in development."""

    chain_signing_key_file: Path = Field(
        default_factory=lambda data: data["var_dir"] / "keys" / "chain-signing.key"
    )
    """File holding the Ed25519 key (base64 of its 32-byte seed, mode 0600) that signs every
    audit chain link and checkpoint: held by the processes that write the event store (workers,
    web interface, CLI), never by auditors, who get its public key (`appeals audit
    public-key`). Created in development; required in production."""

    chain_public_keys_file: Path | None = None
    """File of the public keys accepted when verifying the audit chain and checkpoints (one base64
    Ed25519 public key per line, `#` comments): an auditor's copy, and the keys of signing keys
    rotated out. Unset: the public key of `chain_signing_key_file` only."""

    checkpoint_dir: Path = Field(default_factory=lambda data: data["var_dir"] / "checkpoints")
    """Append-only directory of the signed checkpoints of every chain's head (files are created
    once, never overwritten): a place the event store's database writer cannot change, e.g. a
    separately owned mount or a synced audit share."""

    checkpoint_interval: str = "15m"
    """How often the worker writes a checkpoint (one is also written whenever a case closes): a
    duration of at least `1m`, such as `15m` or `1h`. Events recorded after the latest checkpoint
    (at most this long) are not protected against deletion of a case's newest events."""

    smtp_host: str = "127.0.0.1"
    """SMTP server. Must be loopback unless `live_sending` is on."""

    smtp_port: int = Field(default=8025, ge=1, le=65535)
    """SMTP port (the development sink listens on 8025)."""

    smtp_username: str | None = None
    """SMTP login, if the server requires one."""

    smtp_password: SecretStr | None = None
    """SMTP password for `smtp_username`."""

    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    """Timeout for connecting to and each exchange with the SMTP server."""

    smtp_starttls: bool | None = None
    """Require STARTTLS. Defaults to on when `live_sending` is on; cannot be off in live mode."""

    smtp_ca_file: Path | None = None
    """CA bundle to verify the SMTP server's certificate, when it is not publicly trusted."""

    live_sending: bool = False
    """Send to any SMTP host. Off: only a loopback host is accepted, so nothing real can be
    mailed by accident."""

    smtp_capture_host: str | None = None
    """A mail-capturing server that delivers nothing (Mailpit in docker-compose.yml): while
    `live_sending` is off, `smtp_host` may name this host besides loopback. Never a relay."""

    mail_from: str = f"urgent-appeals@secretariat.{PLACEHOLDER_DOMAIN}"
    """Sender address of every outgoing message."""

    escalation_contacts: dict[int, list[str]] = Field(default_factory=_development_contacts)
    """Staff addresses per escalation level, as JSON: `{"1": [...], "2": [...], "3": [...]}`.
    Levels 1 to 3 are required."""

    rapporteur_requires_clearance: bool = True
    """Whether a submission to UN Special Procedures needs ministry clearance."""

    emergency_fund_requires_clearance: bool = False
    """Whether a request to an emergency fund needs ministry clearance."""

    address_book_path: Path | None = None
    """Address book file (recipients with a last-verified date each)."""

    address_max_age_days: int = Field(default=365, gt=0)
    """An address not verified for longer than this still receives the message, but a warning
    is recorded on the case for staff to check it."""

    deadlines_file: Path | None = None
    """TOML file of deadlines: a table per step of the deadline table (`verification`, `consent`,
    `clearance`, `dispatch`, `follow_up`...) with durations per level (`critical`, `high`,
    `medium`, `low`) such as `"30m"`, `"4h"`, `"5d"` or `"2w"`. What it leaves out keeps its
    default (docs/design.md section 2.9); a more urgent level may not wait longer than a less
    urgent one."""

    checkin_interval: str = "14d"
    """How often, during follow-up, the case officer is reminded to check in with the defenders:
    a duration of at least `1h`, such as `14d` or `36h`."""

    signatory_name: str = ""
    """Name that signs every letter to outside recipients. Development: `Duty officer
    (development)`. Required in production."""

    signatory_organisation: str = ""
    """Organisation that signs every letter, named as the submitting organisation to OHCHR.
    Development: `Urgent appeals secretariat (development)`. Required in production."""


    max_cached_workflows: int = Field(default=300, ge=0)
    """How many case workflows a worker keeps in memory between tasks. Others are replayed from
    their history when they next act: fewer means less memory and a little more CPU."""

    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Port on which the worker serves Temporal SDK metrics for Prometheus (`/metrics`); off when
    unset."""

    metrics_host: str = "127.0.0.1"
    """Address the metrics endpoint binds to (`0.0.0.0` inside a container)."""

    codec_server_token: SecretStr | None = None
    """Access token the Temporal UI must forward to the codec server (`python -m
    worker.codec_server`) to see payloads in plain text; at least 16 characters."""

    codec_server_ui_origins: list[str] = Field(default_factory=list)
    """Origins of the Temporal UI allowed to call the codec server, as JSON: `["https://ui..."]`."""

    codec_server_host: str = "127.0.0.1"
    """Address the codec server listens on (`0.0.0.0` inside a container)."""

    codec_server_port: int = Field(default=8888, ge=1, le=65535)
    """Port of the codec server; `make run` starts one on this port, on loopback only, for the
    Temporal UI it starts (which then shows payloads decoded)."""

    web_host: str = "127.0.0.1"
    """Address the staff web interface listens on (`0.0.0.0` inside a container)."""

    web_port: int = Field(default=8000, ge=1, le=65535)
    """Port of the staff web interface."""

    web_trusted_proxies: list[str] = Field(default=[])
    """Addresses or networks (CIDR, as JSON: `["172.28.0.0/16"]`) of the reverse proxy in front
    of the web interface: only from these is X-Forwarded-For believed, so that the sign-in
    throttle counts per client and not per proxy. Empty: the connecting address is the client."""

    config_dir: Path | None = None
    """The `appeals` command line's own directory (mode 0700), holding the session of `appeals
    login` (mode 0600); unset: `$XDG_CONFIG_HOME/appeals`, else `~/.config/appeals`."""

    # The deadlines file's entries in seconds, read and checked once at start-up.
    _deadline_overrides: dict[str, dict[str, int]] | None = PrivateAttr(default=None)

    # --- field checks -------------------------------------------------------------------------

    @field_validator("event_cipher_key")
    @classmethod
    def _event_key_decodes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key(value.get_secret_value(), setting=_env("event_cipher_key"))
        return value

    @field_validator("event_cipher_previous_keys")
    @classmethod
    def _previous_keys_decode(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for part in value.get_secret_value().split(","):
                if part.strip():
                    decode_key(part, setting=_env("event_cipher_previous_keys"))
        return value

    @field_validator("codec_keys")
    @classmethod
    def _codec_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            KeyRing.parse(value.get_secret_value(), setting=_env("codec_keys"))
        return value

    @field_validator("smtp_username", "smtp_password", "smtp_capture_host", "database_password",
                     "schema_database_url", "schema_database_password",
                     "temporal_tls_ca_file", "temporal_tls_cert_file", "temporal_tls_key_file",
                     "temporal_tls_server_name", "config_dir", "chain_public_keys_file",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`VAR=` (as compose writes `${VAR:-}`) means not set, not an empty login."""
        return None if value == "" else value

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_address(cls, value: str) -> str:
        return check_address(value, header=_env("mail_from"))

    @field_validator("checkin_interval")
    @classmethod
    def _checkin_interval_is_a_duration(cls, value: str) -> str:
        setting = _env("checkin_interval")
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(f"{setting}: must be a positive duration like 12h or 14d") from None
        if seconds < HOUR:
            raise ValueError(f"{setting}: must be at least 1h, like 14d")
        return value.strip()

    @field_validator("checkpoint_interval")
    @classmethod
    def _checkpoint_interval_is_a_duration(cls, value: str) -> str:
        try:
            parse_duration(value)
        except ValueError:
            raise ValueError(f"{_env('checkpoint_interval')}: must be a positive duration like "
                             "15m or 1h") from None
        return value.strip()

    @field_validator("signatory_name", "signatory_organisation")
    @classmethod
    def _signatory_is_one_line(cls, value: str, info: Any) -> str:
        value = value.strip()
        if len(value) > SIGNATORY_MAX_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"{_env(info.field_name)}: must be one line of at most "
                             f"{SIGNATORY_MAX_LENGTH} characters")
        return value

    @field_validator("escalation_contacts")
    @classmethod
    def _contacts_complete(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        setting = _env("escalation_contacts")
        for level in REQUIRED_ESCALATION_LEVELS:
            if not value.get(level):
                raise ValueError(f"{setting}: level {level} needs at least one address")
        for level, addresses in value.items():
            for i, address in enumerate(addresses):
                check_address(address, header=f"{setting} level {level} [{i}]")
        return value

    # --- rules across fields ------------------------------------------------------------------

    @model_validator(mode="after")
    def _mail_cannot_leak(self) -> Settings:
        if self.smtp_starttls is None:
            self.smtp_starttls = self.live_sending
        capture = self.smtp_capture_host is not None and self.smtp_host == self.smtp_capture_host
        if not self.live_sending and not is_loopback_host(self.smtp_host) and not capture:
            raise ValueError(
                f"{_env('smtp_host')} must be a loopback address while "
                f"{_env('live_sending')} is off, so that nothing real is mailed by accident"
            )
        if self.live_sending and not self.smtp_starttls:
            raise ValueError(f"{_env('smtp_starttls')} cannot be off when live sending is on")
        return self

    @model_validator(mode="after")
    def _production_is_explicit(self) -> Settings:
        if self.environment != "production":
            return self
        if self.event_cipher_key is None:
            _require_key_file(self.event_cipher_key_file, "event_cipher_key", "event_cipher_key_file")
        if self.codec_keys is None:
            _require_key_file(self.codec_key_file, "codec_keys", "codec_key_file")
        if any(_is_placeholder(a) for addresses in self.escalation_contacts.values() for a in addresses):
            raise ValueError(
                f"{_env('escalation_contacts')}: production needs real staff addresses, "
                f"not {PLACEHOLDER_DOMAIN} placeholders"
            )
        if _is_placeholder(self.mail_from):
            raise ValueError(f"{_env('mail_from')}: production needs a real sender address")
        return self

    @model_validator(mode="after")
    def _letters_are_signed(self) -> Settings:
        for field, development in DEVELOPMENT_SIGNATORY.items():
            if getattr(self, field):
                continue
            if self.environment == "production":
                raise ValueError(f"{_env(field)}: production needs who signs the letters "
                                 f"({'name' if field == 'signatory_name' else 'organisation'})")
            setattr(self, field, development)
        return self

    @model_validator(mode="after")
    def _deadlines_are_read(self) -> Settings:
        if self.deadlines_file is not None:
            self._deadline_overrides = read_deadlines_file(self.deadlines_file)
        return self

    @model_validator(mode="after")
    def _database_password_goes_into_the_url(self) -> Settings:
        if self.database_password is not None:
            self.database_url = url_with_password(self.database_url, self.database_password)
        if self.schema_database_password is not None:
            self.schema_database_url = schema_url_with_password(self.schema_database_url,
                                                                self.schema_database_password)
        return self

    @model_validator(mode="after")
    def _temporal_connection_is_secure(self) -> Settings:
        check_temporal_tls(self)
        return self

    # --- derived values -----------------------------------------------------------------------

    @property
    def starttls_required(self) -> bool:
        return bool(self.smtp_starttls)

    @property
    def deadline_overrides(self) -> dict[str, dict[str, int]] | None:
        """Seconds per step and level from `deadlines_file` (None without one), for
        `domain.policies.deadline_table`."""
        return self._deadline_overrides

    @property
    def checkin_interval_seconds(self) -> int:
        return parse_duration(self.checkin_interval)

    def event_store_cipher_key(self) -> str:
        """The event store's master key as base64 text, followed by the previous master keys
        (`CURRENT,PREVIOUS,...`) when there are any: what store.app.CaseStore takes."""
        if self.event_cipher_key is not None:
            current = self.event_cipher_key.get_secret_value().strip()
        else:
            current = encode_key(self._key_from_file(self.event_cipher_key_file))
        previous = [part.strip() for part in (self.event_cipher_previous_keys.get_secret_value()
                                              if self.event_cipher_previous_keys else "").split(",")
                    if part.strip() and part.strip() != current]
        return ",".join([current, *previous])

    def decision_signing_key(self) -> bytes:
        """The key that signs and checks decision assertions (desk.assertions)."""
        return self._key_from_file(self.decision_key_file)

    def totp_key(self) -> bytes:
        """The key that seals TOTP secrets at rest (desk.secrets); KeyMaterialError naming the
        setting when production has no such file."""
        if self.environment != "development" and not self.totp_key_file.is_file():
            raise KeyMaterialError(f"{_env('totp_key_file')}: production needs an existing key "
                                   f"file (not found: {self.totp_key_file})")
        return self._key_from_file(self.totp_key_file)

    @property
    def checkpoint_interval_seconds(self) -> int:
        return parse_duration(self.checkpoint_interval)

    def chain_signer(self) -> ChainSigner:
        """The key that signs chain links and checkpoints; KeyMaterialError naming the setting
        when production has no such file."""
        from store.signing import ChainSigner
        path = self.chain_signing_key_file
        if self.environment != "development" and not path.is_file():
            raise KeyMaterialError(f"{_env('chain_signing_key_file')}: production needs an "
                                   f"existing key file (not found: {path})")
        return ChainSigner.from_seed(self._key_from_file(path))

    def chain_public_keys(self) -> list[Ed25519PublicKey]:
        """The public keys of `chain_public_keys_file` (empty when unset)."""
        from store.signing import SigningKeyError, read_public_keys
        if self.chain_public_keys_file is None:
            return []
        try:
            return read_public_keys(self.chain_public_keys_file,
                                    setting=_env("chain_public_keys_file"))
        except SigningKeyError as exc:
            raise KeyMaterialError(str(exc)) from None

    def chain_keys(self) -> ChainKeys:
        """What verification accepts: the public keys file when set, else the signing key's public
        key (development creates it)."""
        from store.signing import ChainKeys
        extra = self.chain_public_keys()
        return ChainKeys.of(extra) if extra else self.chain_signer().verifier()

    def temporal_tls_config(self) -> TLSConfig | bool:
        """What `Client.connect` takes as `tls`: False (plaintext: the development stack) or the
        CA, client certificate and key, read from their files now (so a renewed certificate is
        used from the next start)."""
        return temporal_tls_config(self)

    def codec_keyring(self) -> KeyRing:
        """The Temporal payload key ring; a key file gives a ring of one fingerprint-named key."""
        if self.codec_keys is not None:
            return KeyRing.parse(self.codec_keys.get_secret_value(), setting=_env("codec_keys"))
        return KeyRing.single(self._key_from_file(self.codec_key_file))

    def _key_from_file(self, path: Path) -> bytes:
        # Only the development stack may mint its own keys: a production key that silently
        # appeared would make every earlier event and payload unreadable.
        if self.environment == "development":
            return load_or_create_key_file(path)
        return read_key_file(path)


def _require_key_file(path: Path, key_field: str, file_field: str) -> None:
    if not path.is_file():
        raise ValueError(
            f"production needs {_env(key_field)}, or {_env(file_field)} naming an existing "
            f"key file (not found: {path})"
        )
    try:
        read_key_file(path)
    except KeyMaterialError as exc:
        raise ValueError(str(exc)) from None


def url_with_password(url: str, password: SecretStr, url_field: str = "database_url",
                      password_field: str = "database_password") -> str:
    """`url` with `password` put in; ValueError (one line, no secret) when it cannot take one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"{_env(url_field)}: not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        raise ValueError(f"{_env(password_field)}: an SQLite event store has no password; "
                         "unset it")
    if parsed.password is not None:
        raise ValueError(f"{_env(password_field)}: {_env(url_field)} already names a "
                         "password; give it in one place only")
    return str(parsed.set(password=password.get_secret_value()).render_as_string(hide_password=False))


def schema_url_with_password(url: str | None, password: SecretStr) -> str:
    if url is None:
        raise ValueError(f"{_env('schema_database_password')}: set "
                         f"{_env('schema_database_url')} too (the password goes into it)")
    return url_with_password(url, password, "schema_database_url", "schema_database_password")


class SchemaSettings(SecretFileSettings):
    """What `appeals store init-db` reads (each field is documented in Settings): the database
    URLs only, so that the one-shot set-up needs no key and no mail setting, and the worker's
    and web interface's settings need not be complete where it runs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, hide_input_in_errors=True,
                                      extra="ignore")
    secret_file_fields = ("database_url", "schema_database_url", "schema_database_password")

    database_url: str | None = None
    schema_database_url: str | None = None
    schema_database_password: SecretStr | None = None

    @field_validator("database_url", "schema_database_url", "schema_database_password",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _password_goes_into_the_url(self) -> SchemaSettings:
        if self.schema_database_password is not None:
            self.schema_database_url = schema_url_with_password(self.schema_database_url,
                                                                self.schema_database_password)
        return self


def load_schema_settings() -> SchemaSettings:
    return SchemaSettings()


TLS_FILE_FIELDS = ("temporal_tls_ca_file", "temporal_tls_cert_file", "temporal_tls_key_file")


def check_temporal_tls(settings: Settings) -> None:
    """The Temporal connection's settings are whole; production connects only with TLS and a
    client certificate. Reads the files, so that a bad one stops the start, not the first call."""
    tls, production = _env("temporal_tls"), settings.environment == "production"
    if not settings.temporal_tls:
        given = [f for f in (*TLS_FILE_FIELDS, "temporal_tls_server_name") if getattr(settings, f)]
        if given:
            raise ValueError(f"{_env(given[0])} is set but {tls} is off: set {tls}=true")
        if production:
            raise ValueError(f"{tls}: production connects to Temporal only over TLS with a client "
                             f"certificate: set {tls}=true, {_env('temporal_tls_cert_file')} and "
                             f"{_env('temporal_tls_key_file')}")
        return
    cert, key = settings.temporal_tls_cert_file, settings.temporal_tls_key_file
    if cert is not None and key is None:
        raise ValueError(f"{_env('temporal_tls_key_file')}: needed with "
                         f"{_env('temporal_tls_cert_file')} (the client certificate's private key)")
    if cert is None and (key is not None or production):
        raise ValueError(f"{_env('temporal_tls_cert_file')}: "
                         + ("needed with " + _env("temporal_tls_key_file") if key is not None else
                            "production presents a client certificate to Temporal (and "
                            f"{_env('temporal_tls_key_file')}, its key)"))
    temporal_tls_config(settings)


def temporal_tls_config(settings: Settings) -> TLSConfig | bool:
    if not settings.temporal_tls:
        return False
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from temporalio.service import TLSConfig

    ca = cert = key = None
    if settings.temporal_tls_ca_file is not None:
        ca = _read_tls_file(settings.temporal_tls_ca_file, "temporal_tls_ca_file")
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise ValueError(f"{_env('temporal_tls_ca_file')}: {settings.temporal_tls_ca_file} "
                             "holds no PEM certificate") from None
    if settings.temporal_tls_cert_file is not None and settings.temporal_tls_key_file is not None:
        cert = _read_tls_file(settings.temporal_tls_cert_file, "temporal_tls_cert_file")
        key = _read_tls_file(settings.temporal_tls_key_file, "temporal_tls_key_file")
        setting = _env("temporal_tls_cert_file")
        try:
            leaf = x509.load_pem_x509_certificates(cert)[0]
        except ValueError:
            raise ValueError(f"{setting}: {settings.temporal_tls_cert_file} holds no PEM "
                             "certificate") from None
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except TypeError:
            raise ValueError(f"{_env('temporal_tls_key_file')}: the key is protected by a "
                             "passphrase; give it without one (mode 0600)") from None
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError(f"{_env('temporal_tls_key_file')}: {settings.temporal_tls_key_file} "
                             "holds no PEM private key") from None
        spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        if leaf.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
            raise ValueError(f"{_env('temporal_tls_key_file')}: not the key of the certificate in "
                             f"{setting}")
        if leaf.not_valid_after_utc < datetime.now(UTC):
            raise ValueError(f"{setting}: the certificate expired on "
                             f"{leaf.not_valid_after_utc:%Y-%m-%d}; issue a new one")
    return TLSConfig(server_root_ca_cert=ca, client_cert=cert, client_private_key=key,
                     domain=settings.temporal_tls_server_name)


def _read_tls_file(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{_env(field)}: {path} cannot be read "
                         f"({exc.strerror or type(exc).__name__})") from None


MINUTE, HOUR, DAY = 60, 3600, 86400
_UNITS = {"m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_DURATION_RE = re.compile(r"^(?:\d+[mhdw])+$")
LEVEL_ORDER = ("critical", "high", "medium", "low")


def parse_duration(text: str) -> int:
    """Seconds in a human duration: whole numbers with a unit, m, h, d or w (`30m`, `4h`, `5d`,
    `1d12h`). Anything else, or zero, is a ValueError."""
    compact = text.strip().lower() if isinstance(text, str) else ""
    if not _DURATION_RE.match(compact):
        raise ValueError("must be a positive duration like 12h or 5d")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+)([mhdw])", compact))
    if seconds <= 0:
        raise ValueError("must be a positive duration like 12h or 5d")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest exact human form of a duration (`90m` → `1h30m`)."""
    parts = []
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or f"{seconds}s"


def read_deadlines_file(path: Path) -> dict[str, dict[str, int]]:
    """The deadlines file as overrides in seconds; ValueError naming the setting and the entry."""
    setting = _env("deadlines_file")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: {path} cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{setting}: {path} is not valid UTF-8 TOML ({exc})") from None
    return deadline_overrides_from(data, setting)


def deadline_overrides_from(data: Mapping[str, Any], setting: str) -> dict[str, dict[str, int]]:
    """Check a plain {step: {level: duration}} table; every error is one line naming the entry."""
    steps = ", ".join(DEFAULT_DEADLINES)
    overrides: dict[str, dict[str, int]] = {}
    for step, levels in data.items():
        if step not in DEFAULT_DEADLINES:
            raise ValueError(f"{setting}: {step[:40]!r} is not a step (steps: {steps})")
        if not isinstance(levels, Mapping):
            raise ValueError(f'{setting}: {step}: must be a table of levels, e.g. critical = "4h"')
        for level, value in levels.items():
            where = f"{setting}: {step}.{level[:40]}"
            if level not in DEFAULT_DEADLINES[step]:
                raise ValueError(f"{where}: not a level (levels: {', '.join(LEVEL_ORDER)})")
            if not isinstance(value, str):
                raise ValueError(f"{where}: must be a positive duration like 12h or 5d")
            try:
                overrides.setdefault(step, {})[level] = parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
    for step, defaults in DEFAULT_DEADLINES.items():
        table = {**defaults, **overrides.get(step, {})}
        for urgent, calmer in zip(LEVEL_ORDER, LEVEL_ORDER[1:], strict=False):
            if table[urgent] > table[calmer]:
                raise ValueError(
                    f"{setting}: {step}.{urgent}: {format_duration(table[urgent])} is longer than "
                    f"{step}.{calmer} ({format_duration(table[calmer])}); a more urgent level "
                    "cannot wait longer")
    return overrides


def _is_placeholder(address: str) -> bool:
    domain = address.rpartition("@")[2].lower()
    return domain == PLACEHOLDER_DOMAIN or domain.endswith("." + PLACEHOLDER_DOMAIN)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings from the environment (keyword arguments override it).

    Called once by each entry point; never at import time.
    """
    return Settings(**overrides)


def reference_markdown() -> str:
    """The configuration reference as a Markdown table (the README carries it; a test keeps the
    two identical): every setting, its environment variable, its default and what it does."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        if info.default_factory is not None:
            default = "derived from `APPEALS_VAR_DIR`" if name != "escalation_contacts" else \
                "placeholder addresses (development only)"
        elif info.default is None or info.default == "":
            default = "unset"
        else:
            default = f"`{info.default}`"
        meaning = " ".join((info.description or "").split()).replace("|", "\\|")
        if name in Settings.secret_file_fields:
            meaning += f" Or from a file: `{_env(name)}{FILE_SUFFIX}`."
        rows.append(f"| `{_env(name)}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


def error_line(exc: Exception) -> str:
    """One line for a person: the first settings error with its variable, or the message."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = _env(str(first["loc"][0])) if first.get("loc") else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        return message if message.startswith(ENV_PREFIX) else f"{where}: {message}"
    return " ".join(str(exc).split())
