"""worker.settings: APPEALS_* environment variables, development defaults, production refusals."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from domain.policies import DAY, HOUR, deadline_table
from tests.test_temporal_tls import TestCA
from worker.keys import KEY_LENGTH, decode_key, encode_key
from worker.settings import Settings, error_line, load_settings

SECRET_PASSWORD = "Zephyrine-Qwoxlandt-smtp-password"
REAL_CONTACTS = {
    "1": ["duty@secretariat.test"],
    "2": ["head@secretariat.test"],
    "3": ["board@secretariat.test", "chair@secretariat.test"],
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No APPEALS_* variables from the calling shell; work in an empty directory."""
    for name in list(os.environ):
        if name.upper().startswith("APPEALS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APPEALS_VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


def new_key_text() -> str:
    return encode_key(os.urandom(KEY_LENGTH))


def production_env(env: pytest.MonkeyPatch) -> dict[str, str]:
    """Set everything production needs; returns the secrets so tests can check they are not echoed."""
    secrets = {"event": new_key_text(), "codec": new_key_text()}
    env.setenv("APPEALS_ENVIRONMENT", "production")
    for name, value in temporal_tls_env(Path.cwd() / "pki").items():  # the env fixture's tmp_path
        env.setenv(name, value)
    env.setenv("APPEALS_EVENT_CIPHER_KEY", secrets["event"])
    env.setenv("APPEALS_CODEC_KEYS", f"k1:{secrets['codec']}")
    env.setenv("APPEALS_ESCALATION_CONTACTS", json.dumps(REAL_CONTACTS))
    env.setenv("APPEALS_MAIL_FROM", "appeals@secretariat.test")
    env.setenv("APPEALS_SIGNATORY_NAME", "Head of Secretariat")
    env.setenv("APPEALS_SIGNATORY_ORGANISATION", "Defenders Fund Secretariat")
    return secrets


def error_text(info: pytest.ExceptionInfo[BaseException]) -> str:
    return str(info.value)


def temporal_tls_env(directory: Path) -> dict[str, str]:
    """Mutual TLS to Temporal: a new CA and a client certificate under `directory`."""
    ca = TestCA(directory)
    client = ca.issue("appeals-worker")
    return {"APPEALS_TEMPORAL_TLS": "true", "APPEALS_TEMPORAL_TLS_CA_FILE": str(ca.cert_file),
            "APPEALS_TEMPORAL_TLS_CERT_FILE": str(client.cert),
            "APPEALS_TEMPORAL_TLS_KEY_FILE": str(client.key)}


# --- development ------------------------------------------------------------------------------


def test_development_defaults(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings()

    assert settings.environment == "development"
    assert settings.var_dir == tmp_path / "var"
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'events.sqlite'}"
    assert settings.event_cipher_key_file == tmp_path / "var" / "keys" / "event-store.key"
    assert settings.codec_key_file == tmp_path / "var" / "keys" / "payload-codec.key"
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 8025)
    assert settings.live_sending is False
    assert settings.starttls_required is False
    assert sorted(settings.escalation_contacts) == [1, 2, 3]
    assert all(settings.escalation_contacts[level] for level in (1, 2, 3))
    assert settings.deadlines_file is None and settings.deadline_overrides is None
    assert settings.checkin_interval == "14d" and settings.checkin_interval_seconds == 14 * DAY
    assert "development" in settings.signatory_name
    assert "development" in settings.signatory_organisation
    # Loading settings creates nothing: keys appear only when asked for.
    assert not (tmp_path / "var").exists()


def test_development_creates_its_own_keys_once(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = load_settings()
    ring = first.codec_keyring()
    event_key = first.event_store_cipher_key()

    for path in (first.codec_key_file, first.event_cipher_key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(decode_key(event_key, setting="test")) == KEY_LENGTH
    assert ring.current_key != decode_key(event_key, setting="test")

    second = load_settings()  # the next start finds the same keys
    assert second.codec_keyring() == ring
    assert second.event_store_cipher_key() == event_key


def test_environment_variables_are_read(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("APPEALS_SMTP_PORT", "2525")
    env.setenv("APPEALS_SMTP_HOST", "localhost")
    env.setenv("APPEALS_TASK_QUEUE", "appeals-test")
    env.setenv("APPEALS_DATABASE_URL", "postgresql+psycopg://appeals@db/appeals")
    env.setenv("APPEALS_ESCALATION_CONTACTS", json.dumps(REAL_CONTACTS))
    settings = load_settings()
    assert settings.smtp_port == 2525
    assert settings.smtp_host == "localhost"
    assert settings.task_queue == "appeals-test"
    assert settings.database_url == "postgresql+psycopg://appeals@db/appeals"
    assert settings.escalation_contacts[3] == ["board@secretariat.test", "chair@secretariat.test"]


def test_keyword_overrides_win_over_the_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("APPEALS_SMTP_PORT", "2525")
    assert load_settings(smtp_port=2626, var_dir=tmp_path / "other").smtp_port == 2626


def test_codec_keys_from_the_environment_take_precedence(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    new, old = new_key_text(), new_key_text()
    env.setenv("APPEALS_CODEC_KEYS", f"k2:{new},k1:{old}")
    ring = load_settings().codec_keyring()
    assert ring.current_id == "k2"
    assert set(ring.keys) == {"k1", "k2"}
    assert not (tmp_path / "var" / "keys" / "payload-codec.key").exists()


def test_unknown_setting_is_refused(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="smtp_hots"):
        load_settings(smtp_hots="127.0.0.1")


# --- production -------------------------------------------------------------------------------


def test_production_with_everything_explicit_starts(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = production_env(env)
    settings = load_settings()
    assert settings.environment == "production"
    assert settings.event_store_cipher_key() == secrets["event"]
    assert settings.codec_keyring().current_id == "k1"
    assert not (tmp_path / "var").exists()  # production never mints keys


def test_production_without_event_key_refuses(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = production_env(env)
    env.delenv("APPEALS_EVENT_CIPHER_KEY")
    env.setenv("APPEALS_SMTP_PASSWORD", SECRET_PASSWORD)
    with pytest.raises(ValidationError) as info:
        load_settings()
    text = error_text(info)
    assert "APPEALS_EVENT_CIPHER_KEY" in text
    assert secrets["codec"] not in text
    assert SECRET_PASSWORD not in text
    assert not (tmp_path / "var" / "keys").exists()


def test_production_without_codec_keys_refuses(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = production_env(env)
    env.delenv("APPEALS_CODEC_KEYS")
    with pytest.raises(ValidationError) as info:
        load_settings()
    text = error_text(info)
    assert "APPEALS_CODEC_KEYS" in text
    assert secrets["event"] not in text
    assert not (tmp_path / "var" / "keys").exists()


def test_production_without_any_key_refuses(env: pytest.MonkeyPatch) -> None:
    env.setenv("APPEALS_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="APPEALS_EVENT_CIPHER_KEY"):
        load_settings()


def test_production_accepts_private_key_files(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    production_env(env)
    env.delenv("APPEALS_CODEC_KEYS")
    key_file = tmp_path / "codec.key"
    key_text = new_key_text()
    key_file.write_text(key_text + "\n")
    key_file.chmod(0o600)
    env.setenv("APPEALS_CODEC_KEY_FILE", str(key_file))
    ring = load_settings().codec_keyring()
    assert ring.current_key == decode_key(key_text, setting="test")


def test_production_refuses_a_key_file_others_can_read(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    production_env(env)
    env.delenv("APPEALS_CODEC_KEYS")
    key_file = tmp_path / "codec.key"
    key_text = new_key_text()
    key_file.write_text(key_text + "\n")
    key_file.chmod(0o644)
    env.setenv("APPEALS_CODEC_KEY_FILE", str(key_file))
    with pytest.raises(ValidationError) as info:
        load_settings()
    text = error_text(info)
    assert "chmod 600" in text
    assert key_text not in text


def test_production_refuses_placeholder_contacts(env: pytest.MonkeyPatch) -> None:
    production_env(env)
    env.delenv("APPEALS_ESCALATION_CONTACTS")
    with pytest.raises(ValidationError, match="APPEALS_ESCALATION_CONTACTS"):
        load_settings()


def test_production_refuses_placeholder_sender(env: pytest.MonkeyPatch) -> None:
    production_env(env)
    env.delenv("APPEALS_MAIL_FROM")
    with pytest.raises(ValidationError, match="APPEALS_MAIL_FROM"):
        load_settings()


@pytest.mark.parametrize("variable", ["APPEALS_EVENT_CIPHER_KEY", "APPEALS_CODEC_KEYS"])
def test_malformed_key_is_refused_without_echoing_it(env: pytest.MonkeyPatch, variable: str) -> None:
    # 24 bytes: valid base64, wrong length.
    bad = encode_key(b"Zephyrine Qwoxlandt 24by")
    env.setenv(variable, bad if variable == "APPEALS_EVENT_CIPHER_KEY" else f"k1:{bad}")
    with pytest.raises(ValidationError) as info:
        load_settings()
    text = error_text(info)
    assert variable in text
    assert bad not in text and bad[:10] not in text
    assert "Zephyrine" not in text


# --- mail safety ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["smtp.example.org", "10.0.0.5", "mail.secretariat.test", "0.0.0.0"])
def test_non_loopback_smtp_host_is_refused_while_live_sending_is_off(
    env: pytest.MonkeyPatch, host: str
) -> None:
    env.setenv("APPEALS_SMTP_HOST", host)
    with pytest.raises(ValidationError) as info:
        load_settings()
    text = error_text(info)
    assert "APPEALS_SMTP_HOST" in text
    assert "APPEALS_LIVE_SENDING" in text


def test_the_declared_capture_host_is_accepted_while_live_sending_is_off_and_nothing_else(
    env: pytest.MonkeyPatch
) -> None:
    # docker-compose.yml's defaults: Mailpit captures every message, and an empty SMTP login.
    env.setenv("APPEALS_SMTP_HOST", "mailpit")
    env.setenv("APPEALS_SMTP_CAPTURE_HOST", "mailpit")
    env.setenv("APPEALS_SMTP_USERNAME", "")
    settings = load_settings()
    assert settings.smtp_host == "mailpit" and settings.smtp_username is None
    env.setenv("APPEALS_SMTP_HOST", "relay.example.org")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert "APPEALS_SMTP_HOST" in error_text(info)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST."])
def test_loopback_smtp_hosts_are_accepted(env: pytest.MonkeyPatch, host: str) -> None:
    env.setenv("APPEALS_SMTP_HOST", host)
    assert load_settings().smtp_host == host


def test_live_sending_allows_a_real_host_and_requires_starttls(env: pytest.MonkeyPatch) -> None:
    env.setenv("APPEALS_SMTP_HOST", "smtp.example.org")
    env.setenv("APPEALS_LIVE_SENDING", "true")
    settings = load_settings()
    assert settings.starttls_required is True

    env.setenv("APPEALS_SMTP_STARTTLS", "false")
    with pytest.raises(ValidationError, match="APPEALS_SMTP_STARTTLS"):
        load_settings()


def test_smtp_password_is_not_shown(env: pytest.MonkeyPatch) -> None:
    env.setenv("APPEALS_SMTP_PASSWORD", SECRET_PASSWORD)
    settings = load_settings()
    assert SECRET_PASSWORD not in repr(settings)
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == SECRET_PASSWORD


# --- escalation contacts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contacts", "expected"),
    [
        ({**REAL_CONTACTS, "2": ["Zephyrine Qwoxlandt <zq@secretariat.test>"]}, "level 2"),
        ({**REAL_CONTACTS, "1": ["zq@secretariat.test\r\nBcc: all@elsewhere.test"]}, "level 1"),
        ({**REAL_CONTACTS, "3": ["zq@secretariat.test", "not-an-address"]}, "level 3"),
        ({"1": REAL_CONTACTS["1"], "2": REAL_CONTACTS["2"]}, "level 3"),
        ({**REAL_CONTACTS, "1": []}, "level 1"),
    ],
)
def test_bad_escalation_contacts_are_refused_naming_the_setting(
    env: pytest.MonkeyPatch, contacts: dict[str, list[str]], expected: str
) -> None:
    env.setenv("APPEALS_ESCALATION_CONTACTS", json.dumps(contacts))
    with pytest.raises(ValidationError) as info:
        load_settings()
    text = error_text(info)
    assert "APPEALS_ESCALATION_CONTACTS" in text
    assert expected in text
    assert "Zephyrine" not in text and "zq@" not in text and "not-an-address" not in text


def test_escalation_contacts_that_are_not_json_are_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("APPEALS_ESCALATION_CONTACTS", '{"1": ["zq@secretariat.test"')
    with pytest.raises(SettingsError, match="escalation_contacts") as info:
        load_settings()
    assert "zq@" not in error_text(info)


def test_bad_sender_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("APPEALS_MAIL_FROM", "Secretariat <appeals@secretariat.test>")
    with pytest.raises(ValidationError, match="APPEALS_MAIL_FROM"):
        load_settings()


def test_settings_object_can_be_built_directly(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    settings = Settings(var_dir=tmp_path / "direct", smtp_port=2525)
    assert settings.database_url.endswith("direct/events.sqlite")


# --- who signs the letters --------------------------------------------------------------------


def test_production_signs_letters_with_the_configured_signatory(env: pytest.MonkeyPatch) -> None:
    production_env(env)
    settings = load_settings()
    assert settings.signatory_name == "Head of Secretariat"
    assert settings.signatory_organisation == "Defenders Fund Secretariat"


@pytest.mark.parametrize("variable", ["APPEALS_SIGNATORY_NAME", "APPEALS_SIGNATORY_ORGANISATION"])
def test_production_refuses_to_start_without_a_signatory(
        env: pytest.MonkeyPatch, variable: str) -> None:
    production_env(env)
    env.setenv(variable, "  ")
    with pytest.raises(ValidationError) as info:
        load_settings()
    line = error_line(info.value)
    assert line.startswith(f"{variable}: production needs who signs the letters") and "\n" not in line


def test_a_signatory_on_several_lines_is_refused_without_echoing_it(env: pytest.MonkeyPatch) -> None:
    env.setenv("APPEALS_SIGNATORY_NAME", "Zephyrine Qwoxlandt\r\nBcc: all@elsewhere.test")
    with pytest.raises(ValidationError) as info:
        load_settings()
    line = error_line(info.value)
    assert line.startswith("APPEALS_SIGNATORY_NAME: must be one line") and "Zephyrine" not in line


# --- deadlines and the check-in interval ---------------------------------------------------------

SHORT_TABLE = """\
# Shorter deadlines for critical cases, longer follow-up for low-risk ones.
[consent]
critical = "6h"
high = "1d"

[dispatch]
critical = "30m"

[follow_up]
low = "6w"
"""


def deadlines(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deadlines.toml"
    path.write_text(text)
    return path


def test_a_deadline_table_is_read_from_a_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("APPEALS_DEADLINES_FILE", str(deadlines(tmp_path, SHORT_TABLE)))
    settings = load_settings()
    assert settings.deadline_overrides == {
        "consent": {"critical": 6 * HOUR, "high": DAY},
        "dispatch": {"critical": 30 * 60},
        "follow_up": {"low": 42 * DAY},
    }
    table = deadline_table(settings.deadline_overrides)
    assert table["consent"]["critical"] == 6 * HOUR and table["consent"]["medium"] == 5 * DAY
    assert table["verification"] == deadline_table()["verification"]


def test_the_worker_hands_the_settings_to_the_activities(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from worker.main import case_config

    env.setenv("APPEALS_DEADLINES_FILE", str(deadlines(tmp_path, SHORT_TABLE)))
    env.setenv("APPEALS_LIVE_SENDING", "false")
    settings = load_settings()
    config = case_config(settings)
    assert config.deadline_overrides == settings.deadline_overrides
    assert config.live_sending is settings.live_sending


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[consent]\ncritical = "soon"\n',
         "APPEALS_DEADLINES_FILE: consent.critical: must be a positive duration like 12h or 5d"),
        ("[consent]\ncritical = 12\n",
         "APPEALS_DEADLINES_FILE: consent.critical: must be a positive duration like 12h or 5d"),
        ('[consent]\ncritical = "0h"\n',
         "APPEALS_DEADLINES_FILE: consent.critical: must be a positive duration like 12h or 5d"),
        ('[consent]\nurgent = "4h"\n',
         "APPEALS_DEADLINES_FILE: consent.urgent: not a level (levels: critical, high, medium, low)"),
        ('[approval]\ncritical = "4h"\n',
         "APPEALS_DEADLINES_FILE: 'approval' is not a step (steps: verification, consent, "),
        ('consent = "4h"\n', "APPEALS_DEADLINES_FILE: consent: must be a table of levels"),
        ('[clearance]\ncritical = "3d"\n',
         "APPEALS_DEADLINES_FILE: clearance.critical: 3d is longer than clearance.high (2d); a more "
         "urgent level cannot wait longer"),
        ("[consent\ncritical = 4h\n", "is not valid UTF-8 TOML"),
    ],
)
def test_a_bad_deadline_entry_stops_start_up_with_one_line_naming_it(
        env: pytest.MonkeyPatch, tmp_path: Path, text: str, message: str) -> None:
    env.setenv("APPEALS_DEADLINES_FILE", str(deadlines(tmp_path, text)))
    with pytest.raises(ValidationError) as info:
        load_settings()
    line = error_line(info.value)
    assert message in line and "\n" not in line and line.startswith("APPEALS_DEADLINES_FILE: ")


def test_a_missing_deadlines_file_is_named(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("APPEALS_DEADLINES_FILE", str(tmp_path / "nowhere.toml"))
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value).startswith("APPEALS_DEADLINES_FILE: ") and \
        "cannot be read" in error_line(info.value)


@pytest.mark.parametrize(("value", "seconds"), [("36h", 36 * HOUR), ("2w", 14 * DAY),
                                                ("1d12h", 36 * HOUR), (" 7d ", 7 * DAY)])
def test_the_checkin_interval_is_a_duration(
        env: pytest.MonkeyPatch, value: str, seconds: int) -> None:
    env.setenv("APPEALS_CHECKIN_INTERVAL", value)
    assert load_settings().checkin_interval_seconds == seconds


@pytest.mark.parametrize(("value", "message"), [
    ("fortnight", "APPEALS_CHECKIN_INTERVAL: must be a positive duration like 12h or 14d"),
    ("14", "APPEALS_CHECKIN_INTERVAL: must be a positive duration like 12h or 14d"),
    ("30m", "APPEALS_CHECKIN_INTERVAL: must be at least 1h, like 14d"),
])
def test_a_bad_checkin_interval_is_refused(env: pytest.MonkeyPatch, value: str, message: str) -> None:
    env.setenv("APPEALS_CHECKIN_INTERVAL", value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value) == message


# --- the connection to Temporal: TLS and client certificates ----------------------------------


def test_production_refuses_to_connect_to_temporal_without_tls(env: pytest.MonkeyPatch) -> None:
    production_env(env)
    env.delenv("APPEALS_TEMPORAL_TLS")
    for name in ("CA_FILE", "CERT_FILE", "KEY_FILE"):
        env.delenv(f"APPEALS_TEMPORAL_TLS_{name}")
    with pytest.raises(ValidationError) as info:
        load_settings()
    line = error_line(info.value)
    assert line.startswith("APPEALS_TEMPORAL_TLS: production connects to Temporal only over TLS")
    assert "\n" not in line


def test_production_refuses_tls_without_a_client_certificate(env: pytest.MonkeyPatch) -> None:
    production_env(env)
    env.delenv("APPEALS_TEMPORAL_TLS_CERT_FILE")
    env.delenv("APPEALS_TEMPORAL_TLS_KEY_FILE")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value).startswith("APPEALS_TEMPORAL_TLS_CERT_FILE: production presents a "
                                             "client certificate")


def test_production_with_mutual_tls_builds_the_client_tls_configuration(
        env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    production_env(env)
    env.setenv("APPEALS_TEMPORAL_TLS_SERVER_NAME", "temporal")
    tls = load_settings().temporal_tls_config()
    assert not isinstance(tls, bool)
    assert tls.client_cert == (tmp_path / "pki" / "appeals-worker.crt").read_bytes()
    assert tls.client_private_key == (tmp_path / "pki" / "appeals-worker.key").read_bytes()
    assert tls.server_root_ca_cert == (tmp_path / "pki" / "ca.crt").read_bytes()
    assert tls.domain == "temporal"


def test_development_connects_in_plaintext_unless_told(env: pytest.MonkeyPatch) -> None:
    assert load_settings().temporal_tls_config() is False
    env.setenv("APPEALS_TEMPORAL_TLS", "true")  # e.g. a Temporal service with a public certificate
    tls = load_settings().temporal_tls_config()
    assert not isinstance(tls, bool) and tls.client_cert is None and tls.server_root_ca_cert is None


@pytest.mark.parametrize("variable", ["APPEALS_TEMPORAL_TLS_CA_FILE", "APPEALS_TEMPORAL_TLS_CERT_FILE",
                                      "APPEALS_TEMPORAL_TLS_SERVER_NAME"])
def test_tls_settings_without_tls_on_are_refused(env: pytest.MonkeyPatch, variable: str) -> None:
    env.setenv(variable, "/somewhere/file.pem")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value) == (f"{variable} is set but APPEALS_TEMPORAL_TLS is off: "
                                      "set APPEALS_TEMPORAL_TLS=true")


def tls_problem(env: pytest.MonkeyPatch, **changes: str) -> str:
    for name, value in {**temporal_tls_env(Path.cwd() / "pki"), **changes}.items():
        if value:
            env.setenv(name, value)
        else:
            env.delenv(name, raising=False)
    with pytest.raises(ValidationError) as info:
        load_settings()
    line = error_line(info.value)
    assert "\n" not in line and "PRIVATE KEY" not in line
    return line


def test_a_client_certificate_needs_its_key_and_the_other_way_round(env: pytest.MonkeyPatch) -> None:
    assert tls_problem(env, APPEALS_TEMPORAL_TLS_KEY_FILE="").startswith(
        "APPEALS_TEMPORAL_TLS_KEY_FILE: needed with APPEALS_TEMPORAL_TLS_CERT_FILE")
    assert tls_problem(env, APPEALS_TEMPORAL_TLS_CERT_FILE="").startswith(
        "APPEALS_TEMPORAL_TLS_CERT_FILE: needed with APPEALS_TEMPORAL_TLS_KEY_FILE")


def test_a_missing_or_wrong_tls_file_is_named(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    assert tls_problem(env, APPEALS_TEMPORAL_TLS_CA_FILE=str(missing)) == \
        f"APPEALS_TEMPORAL_TLS_CA_FILE: {missing} cannot be read (No such file or directory)"
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    assert tls_problem(env, APPEALS_TEMPORAL_TLS_CERT_FILE=str(text)) == \
        f"APPEALS_TEMPORAL_TLS_CERT_FILE: {text} holds no PEM certificate"
    assert tls_problem(env, APPEALS_TEMPORAL_TLS_KEY_FILE=str(text)) == \
        f"APPEALS_TEMPORAL_TLS_KEY_FILE: {text} holds no PEM private key"


def test_a_key_of_another_certificate_or_an_expired_certificate_is_refused(
        env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "second-pki")
    other = ca.issue("someone-else")
    assert tls_problem(env, APPEALS_TEMPORAL_TLS_KEY_FILE=str(other.key)) == (
        "APPEALS_TEMPORAL_TLS_KEY_FILE: not the key of the certificate in "
        "APPEALS_TEMPORAL_TLS_CERT_FILE")
    import datetime as dt
    old = ca.issue("last-year", days=30, ago=dt.timedelta(days=400))
    line = tls_problem(env, APPEALS_TEMPORAL_TLS_CERT_FILE=str(old.cert),
                       APPEALS_TEMPORAL_TLS_KEY_FILE=str(old.key))
    assert line.startswith("APPEALS_TEMPORAL_TLS_CERT_FILE: the certificate expired on ")


def test_a_passphrase_protected_key_is_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    client = TestCA(tmp_path / "pki-locked").issue("locked")
    key = serialization.load_pem_private_key(client.key.read_bytes(), password=None)
    client.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase")))
    line = tls_problem(env, APPEALS_TEMPORAL_TLS_CERT_FILE=str(client.cert),
                       APPEALS_TEMPORAL_TLS_KEY_FILE=str(client.key))
    assert line.startswith("APPEALS_TEMPORAL_TLS_KEY_FILE: the key is protected by a passphrase")


# --- secrets as files (Docker secrets) ---------------------------------------------------------


def secret_file(tmp_path: Path, text: str, name: str = "secret") -> Path:
    path = tmp_path / "run-secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("field", Settings.secret_file_fields)
def test_every_secret_can_be_given_as_a_file(env: pytest.MonkeyPatch, tmp_path: Path,
                                             field: str) -> None:
    value = {"database_url": "postgresql+psycopg://appeals:Qwox-pass@db/appeals",
             "database_password": "Qwox-pass", "codec_keys": f"k1:{new_key_text()}",
             "smtp_password": SECRET_PASSWORD, "codec_server_token": "t" * 32,
             "schema_database_url": "postgresql+psycopg://owner:Qwox-pass@db/appeals",
             "schema_database_password": "Qwox-pass",
             "event_cipher_previous_keys": f"{new_key_text()},{new_key_text()}"}[field]
    # A password goes into its URL.
    into = {"database_password": "database_url",
            "schema_database_password": "schema_database_url"}.get(field)
    if into:
        env.setenv(f"APPEALS_{into.upper()}", "postgresql+psycopg://appeals@db/appeals")
    # A final line break (as editors and `echo` write) is not part of the secret.
    env.setenv(f"APPEALS_{field.upper()}_FILE", str(secret_file(tmp_path, value + "\n")))
    settings = load_settings()
    got = getattr(settings, into or field)
    got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
    if into:
        assert got == "postgresql+psycopg://appeals:Qwox-pass@db/appeals"
    else:
        assert got == value
    assert SECRET_PASSWORD not in repr(settings)


def test_a_missing_secret_file_stops_start_up_with_one_line(env: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    missing = tmp_path / "run-secrets" / "codec_keys"
    env.setenv("APPEALS_CODEC_KEYS_FILE", str(missing))
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value) == \
        f"APPEALS_CODEC_KEYS_FILE: {missing} cannot be read (No such file or directory)"


def test_an_unreadable_secret_file_is_named(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "run-secrets"
    folder.mkdir()
    env.setenv("APPEALS_SMTP_PASSWORD_FILE", str(folder))  # a directory, not a file
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value) == f"APPEALS_SMTP_PASSWORD_FILE: {folder} cannot be read (Is a directory)"
    binary = secret_file(tmp_path, "", "binary")
    binary.write_bytes(b"\xff\xfe\x00secret")
    env.setenv("APPEALS_SMTP_PASSWORD_FILE", str(binary))
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value) == f"APPEALS_SMTP_PASSWORD_FILE: {binary} is not UTF-8 text"


def test_a_secret_given_both_ways_is_refused_without_echoing_it(env: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    env.setenv("APPEALS_SMTP_PASSWORD", SECRET_PASSWORD)
    env.setenv("APPEALS_SMTP_PASSWORD_FILE", str(secret_file(tmp_path, SECRET_PASSWORD + "-2")))
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value) == \
        "APPEALS_SMTP_PASSWORD and APPEALS_SMTP_PASSWORD_FILE are both set: keep only one"
    assert SECRET_PASSWORD not in str(info.value)


def test_an_empty_file_variable_means_unset_and_keywords_still_win(env: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    env.setenv("APPEALS_SMTP_PASSWORD_FILE", "")  # as compose writes `${VAR:-}`
    assert load_settings().smtp_password is None
    env.setenv("APPEALS_SMTP_PASSWORD_FILE", str(secret_file(tmp_path, "")))  # no SMTP login
    assert load_settings().smtp_password is None
    env.setenv("APPEALS_SMTP_PASSWORD_FILE", str(secret_file(tmp_path, "from-the-file")))
    assert load_settings(smtp_password="given").smtp_password.get_secret_value() == "given"  # type: ignore[union-attr]


def test_a_malformed_secret_from_a_file_is_refused_without_echoing_it(
        env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("APPEALS_CODEC_KEYS_FILE", str(secret_file(tmp_path, "k1:Zephyrine-not-base64")))
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert "APPEALS_CODEC_KEYS" in error_line(info.value) and "Zephyrine" not in str(info.value)


def test_production_starts_with_every_secret_from_a_file(env: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    secrets = production_env(env)
    env.delenv("APPEALS_EVENT_CIPHER_KEY")
    env.delenv("APPEALS_CODEC_KEYS")
    event_key = secret_file(tmp_path, secrets["event"] + "\n", "event_cipher_key")
    event_key.chmod(0o600)  # the key file setting's own rule
    env.setenv("APPEALS_EVENT_CIPHER_KEY_FILE", str(event_key))
    env.setenv("APPEALS_CODEC_KEYS_FILE", str(secret_file(tmp_path, f"k1:{secrets['codec']}", "codec")))
    env.setenv("APPEALS_DATABASE_URL", "postgresql+psycopg://appeals@postgres:5432/appeals_events")
    env.setenv("APPEALS_DATABASE_PASSWORD_FILE", str(secret_file(tmp_path, "p@ss/w:rd", "db")))
    env.setenv("APPEALS_SMTP_PASSWORD_FILE", str(secret_file(tmp_path, SECRET_PASSWORD, "smtp")))
    settings = load_settings()
    assert settings.event_store_cipher_key() == secrets["event"]
    assert settings.codec_keyring().current_id == "k1"
    from sqlalchemy.engine import make_url
    url = make_url(settings.database_url)
    assert url.password == "p@ss/w:rd" and url.host == "postgres" and url.username == "appeals"
    assert settings.smtp_password is not None


@pytest.mark.parametrize(("url", "message"), [
    ("sqlite:///var/events.sqlite", "APPEALS_DATABASE_PASSWORD: an SQLite event store has no password"),
    ("postgresql+psycopg://appeals:other@db/appeals",
     "APPEALS_DATABASE_PASSWORD: APPEALS_DATABASE_URL already names a password"),
])
def test_a_database_password_needs_a_url_without_one(env: pytest.MonkeyPatch, url: str,
                                                     message: str) -> None:
    env.setenv("APPEALS_DATABASE_URL", url)
    env.setenv("APPEALS_DATABASE_PASSWORD", "Qwox-pass")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert error_line(info.value).startswith(message)
    assert "Qwox" not in str(info.value)


def test_the_configuration_reference_names_the_file_variables() -> None:
    from worker.settings import reference_markdown

    table = reference_markdown()
    for field in Settings.secret_file_fields:
        assert f"`APPEALS_{field.upper()}_FILE`" in table, field
    assert "`APPEALS_EVENT_CIPHER_KEY_FILE`" in table  # the event key's own file setting


def test_the_settings_import_neither_the_mailer_nor_temporal() -> None:
    """Every command loads the settings first: they check addresses and hosts with
    activities.addresses, without the SMTP client or the Temporal SDK (a command that talks to
    neither does not pay for their import)."""
    import subprocess
    import sys

    code = ("import sys, worker.settings; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert not loaded & {"aiosmtplib", "temporalio", "eventsourcing", "sqlalchemy"}
