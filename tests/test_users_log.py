"""User administration by heads only (issue 12, item 4), store side: the users log, its chain and
the check of the users table against it, and the session registry; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from domain.users import (
    USERS_LOG_ID,
    BootstrapRefused,
    InvalidUserField,
    LastHead,
    NotPermitted,
    UnknownRole,
    UnknownUser,
    UserActive,
    UserExists,
    UserInactive,
)
from store import schema, users
from store.app import CaseStore, StoreError, verifier_without_key
from tests.backends import Backend
from tests.factories import T0

HASH_1 = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$first-hash-for-the-test"
HASH_2 = "$argon2id$v=19$m=65536,t=3,p=4$b3RoZXJzYWx0c2FsdA$second-hash-for-the-test"
TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
EMAIL = "hana.qorrvelt@secretariat.example.org"


def email(name: str) -> str:
    return f"{name}@secretariat.example.org"


@pytest.fixture
def headed(store: CaseStore) -> CaseStore:
    """hana (head, bootstrapped), olga (case officer), lina (ministry liaison)."""
    store.users.bootstrap_head("hana", "Hana Qorrvelt", EMAIL)
    store.users.add("olga", "Olga", email("olga"), ["case_officer"], actor="hana")
    store.users.add("lina", "Lina", email("lina"), ["ministry_liaison"], actor="hana")
    return store


def log_events(store: CaseStore) -> list[tuple[str, str]]:
    return [(e.event, e.actor) for e in store.users_log()]


def chain_rows(store: CaseStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.chain)
                                .where(schema.chain.c.case_id == str(USERS_LOG_ID))).scalar_one())


def table(store: CaseStore) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(schema.users)
                                              .order_by(schema.users.c.username)).mappings()]


def sql(store: CaseStore, statement: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


# ------------------------------------------------------------------------------------ bootstrap
def test_the_first_head_is_bootstrapped_once_then_refused(store: CaseStore) -> None:
    store.users.bootstrap_head("hana", "Hana Qorrvelt", EMAIL)
    assert store.user_roles("hana") == {"head"}
    with pytest.raises(BootstrapRefused, match="A head already exists"):
        store.users.bootstrap_head("mallory", "Mallory", email("mallory"))
    assert store.user("mallory") is None
    assert log_events(store) == [("LogStarted", "bootstrap"), ("FirstHeadBootstrapped", "bootstrap")]


def test_bootstrap_is_refused_when_a_head_exists_from_the_fixtures(store: CaseStore) -> None:
    store.add_user("aldo", "Aldo", email("aldo"), ["head", "auditor"])
    with pytest.raises(BootstrapRefused):
        store.users.bootstrap_head("mallory", "Mallory", email("mallory"))


# -------------------------------------------------------------------------------- heads only
def test_a_non_head_adding_a_user_or_a_role_is_refused_and_records_nothing(headed: CaseStore) -> None:
    before = (headed.users_log(), chain_rows(headed), table(headed))
    with pytest.raises(NotPermitted, match="Only an active head may add users"):
        headed.users.add("mallory", "Mallory", email("mallory"), ["head"], actor="olga")
    with pytest.raises(NotPermitted, match="Only an active head may change roles"):
        headed.users.set_roles("olga", ["case_officer", "head"], actor="olga")
    with pytest.raises(NotPermitted):
        headed.users.set_password("lina", HASH_1, actor="olga")
    with pytest.raises(NotPermitted):
        headed.users.deactivate("lina", "left", actor="olga")
    with pytest.raises(NotPermitted):
        headed.users.set_totp("lina", None, actor="olga")
    with pytest.raises(NotPermitted):  # someone not in the registry at all
        headed.users.add("mallory", "Mallory", email("mallory"), ["auditor"], actor="nobody")
    for reserved in ("bootstrap", "system", ""):  # a door cannot act as first setup
        with pytest.raises(NotPermitted):
            headed.users.add("mallory", "Mallory", email("mallory"), ["auditor"], actor=reserved)
    assert (headed.users_log(), chain_rows(headed), table(headed)) == before
    assert headed.user("mallory") is None and headed.user_roles("olga") == {"case_officer"}


def test_refused_inputs_record_nothing(headed: CaseStore) -> None:
    before = (headed.users_log(), table(headed))
    with pytest.raises(UnknownRole):
        headed.users.set_roles("olga", ["superuser"], actor="hana")
    with pytest.raises(UnknownRole):
        headed.users.add("vera", "Vera", email("vera"), ["root"], actor="hana")
    with pytest.raises(InvalidUserField, match="roles"):
        headed.users.set_roles("olga", [], actor="hana")
    with pytest.raises(UserExists):
        headed.users.add("olga", "Olga", email("olga"), ["auditor"], actor="hana")
    with pytest.raises(UnknownUser):
        headed.users.set_roles("nobody", ["auditor"], actor="hana")
    for bad in ("bootstrap", "with space", "x" * 101, ""):
        with pytest.raises(InvalidUserField, match="username"):
            headed.users.add(bad, "Bad", email("bad"), ["auditor"], actor="hana")
    with pytest.raises(InvalidUserField, match="email"):
        headed.users.add("vera", "Vera", "not an address", ["auditor"], actor="hana")
    with pytest.raises(InvalidUserField, match="display name"):
        headed.users.add("vera", "Line\nbreak", email("vera"), ["auditor"], actor="hana")
    assert (headed.users_log(), table(headed)) == before


def test_the_last_active_head_cannot_be_removed(headed: CaseStore) -> None:
    with pytest.raises(LastHead, match="last active head"):
        headed.users.set_roles("hana", ["case_officer"], actor="hana")
    with pytest.raises(LastHead):
        headed.users.deactivate("hana", "Leaving", actor="hana")
    with pytest.raises(StoreError, match="last active head"):  # nor through the setup helpers
        headed.set_roles("hana", ["auditor"])
    headed.users.set_roles("olga", ["case_officer", "head"], actor="hana")
    headed.users.set_roles("hana", ["case_officer"], actor="olga")
    assert headed.user_roles("hana") == {"case_officer"}
    with pytest.raises(LastHead):
        headed.users.deactivate("olga", "Leaving", actor="olga")
    with pytest.raises(NotPermitted):  # no longer a head
        headed.users.set_roles("hana", ["head"], actor="hana")


def test_a_deactivated_user_is_changed_only_by_reactivation(headed: CaseStore) -> None:
    headed.users.deactivate("olga", "Left the secretariat", actor="hana")
    assert headed.user_roles("olga") == set() and headed.user("olga")["active"] is False  # type: ignore[index]
    assert headed.password_hash("olga") is None
    with pytest.raises(UserInactive, match="deactivated"):
        headed.users.set_roles("olga", ["auditor"], actor="hana")
    with pytest.raises(UserInactive):
        headed.users.set_password("olga", HASH_1, actor="hana")
    with pytest.raises(UserInactive):
        headed.users.deactivate("olga", "again", actor="hana")
    with pytest.raises(UserExists, match="reactivate"):
        headed.users.add("olga", "Olga", email("olga"), ["auditor"], actor="hana")
    with pytest.raises(UserActive):
        headed.users.reactivate("lina", actor="hana")
    headed.users.reactivate("olga", actor="hana")
    assert headed.user_roles("olga") == {"case_officer"}


def test_a_deactivated_head_cannot_act(headed: CaseStore) -> None:
    headed.users.set_roles("lina", ["ministry_liaison", "head"], actor="hana")
    headed.users.deactivate("lina", "On leave", actor="hana")
    with pytest.raises(NotPermitted):
        headed.users.add("vera", "Vera", email("vera"), ["auditor"], actor="lina")


# ------------------------------------------------------------------------------------- the log
def test_every_change_is_in_the_users_log_with_its_actor_and_no_credential(headed: CaseStore) -> None:
    h = headed.users
    h.set_roles("olga", ["case_officer", "auditor"], actor="hana")
    h.set_password("olga", HASH_1, actor="olga")                       # her own
    h.set_password("lina", HASH_2, actor="hana")                       # a head's reset
    h.set_totp("olga", TOTP, actor="olga")
    h.set_totp("olga", None, actor="hana")
    h.deactivate("lina", "Left the secretariat", actor="hana")
    h.reactivate("lina", actor="hana", command_id="react-1")
    headed.set_password("lina", None)                                  # setup helper
    entries = headed.users_log()
    assert [(e.event, e.actor) for e in entries] == [
        ("LogStarted", "bootstrap"), ("FirstHeadBootstrapped", "bootstrap"),
        ("UserAdded", "hana"), ("UserAdded", "hana"), ("RolesChanged", "hana"),
        ("PasswordSet", "olga"), ("PasswordSet", "hana"), ("SecondFactorEnrolled", "olga"),
        ("SecondFactorRemoved", "hana"), ("UserDeactivated", "hana"), ("UserReactivated", "hana"),
        ("PasswordSet", "bootstrap")]
    assert [e.version for e in entries] == list(range(1, len(entries) + 1))
    by_event = {e.event: e.details for e in entries}
    assert entries[2].details == {"username": "olga", "display_name": "Olga",
                                  "email": email("olga"), "roles": ["case_officer"]}
    assert by_event["RolesChanged"] == {"username": "olga", "old": ["case_officer"],
                                        "new": ["auditor", "case_officer"]}
    assert [e.details["change"] for e in entries if e.event == "PasswordSet"] == [
        "set", "reset", "removed"]
    assert by_event["UserDeactivated"]["reason"] == "Left the secretariat"
    assert entries[10].command_id == "react-1"
    assert all(isinstance(e.at, datetime) for e in entries)
    shown = repr(entries)
    for secret in (HASH_1, HASH_2, TOTP, users.fingerprint(HASH_1), users.fingerprint(TOTP)):
        assert secret not in shown
    assert headed.password_hash("olga") == HASH_1 and headed.password_hash("lina") is None
    assert headed.totp_secret("olga") is None
    assert headed.verify_users().ok


def test_a_repeated_command_id_records_nothing_new(headed: CaseStore) -> None:
    headed.users.add("vera", "Vera", email("vera"), ["auditor"], actor="hana", command_id="u-1")
    headed.users.add("vera", "Vera", email("vera"), ["auditor"], actor="hana", command_id="u-1")
    headed.users.set_roles("vera", ["auditor"], actor="hana")  # unchanged: nothing to record
    assert [e.event for e in headed.users_log()].count("UserAdded") == 3
    assert len(headed.users_log()) == 5


def test_the_old_helpers_record_as_bootstrap_and_keep_their_errors(store: CaseStore) -> None:
    store.add_user("olga", "Olga", email("olga"), ["case_officer"])
    store.set_roles("olga", ["case_officer", "auditor"])
    store.set_password("olga", HASH_1)
    store.set_totp("olga", TOTP)
    assert store.user_roles("olga") == {"case_officer", "auditor"}
    assert (store.password_hash("olga"), store.totp_secret("olga")) == (HASH_1, TOTP)
    assert {actor for _, actor in log_events(store)} == {"bootstrap"}
    with pytest.raises(StoreError, match="already exists"):
        store.add_user("olga", "Olga", email("olga"), ["case_officer"])
    with pytest.raises(StoreError, match="No user"):
        store.set_roles("nobody", ["auditor"])
    with pytest.raises(StoreError, match="No user"):
        store.set_password("nobody", HASH_1)
    with pytest.raises(ValueError):
        store.add_user("vera", "Vera", email("vera"), ["superuser"])
    assert store.verify_users().ok


def test_users_in_the_table_before_the_log_are_adopted_at_its_first_change(store: CaseStore) -> None:
    with store.engine.begin() as conn:  # a registry written before the users log existed
        conn.execute(schema.users.insert().values(
            username="hana", display_name="Hana", email=EMAIL, roles="head", active=True,
            password_hash=HASH_1, created_at=T0))
    report = store.verify_users()
    assert [d.username for d in report.differences] == ["hana"]  # not yet in any log
    with pytest.raises(BootstrapRefused):
        store.users.bootstrap_head("mallory", "Mallory", email("mallory"))
    store.users.add("olga", "Olga", email("olga"), ["case_officer"], actor="hana")
    started = store.users_log()[0]
    assert (started.event, started.actor) == ("LogStarted", "hana")
    assert started.details["adopted"] == [{"username": "hana", "display_name": "Hana",
                                           "email": EMAIL, "roles": ["head"], "active": True,
                                           "password": True, "second_factor": False}]
    assert store.verify_users().ok and store.password_hash("hana") == HASH_1


def test_users_log_events_are_encrypted(headed: CaseStore) -> None:
    with headed.engine.connect() as conn:  # no case yet: every event is the users log's
        states = [bytes(r[0]) for r in conn.execute(text("SELECT state FROM appeals_events"))]
    assert len(states) == 4
    for state in states:
        for needle in (b"Hana Qorrvelt", EMAIL.encode(), b"ministry_liaison", b"UserAdded"):
            assert needle not in state


def test_the_users_table_changes_with_the_events_or_not_at_all(headed: CaseStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = (headed.users_log(), chain_rows(headed), table(headed))

    def failing_writer(*_: Any) -> Any:
        def apply(session: Session) -> None:
            raise RuntimeError("the users table write failed")
        return apply

    monkeypatch.setattr(users, "_writer", failing_writer)
    with pytest.raises(RuntimeError):
        headed.users.set_roles("olga", ["auditor"], actor="hana")
    assert (headed.users_log(), chain_rows(headed), table(headed)) == before


def test_concurrent_heads_lose_no_change(backend: Backend) -> None:
    setup = backend.open()
    setup.users.bootstrap_head("hana", "Hana", EMAIL)
    setup.users.add("olga", "Olga", email("olga"), ["case_officer", "head"], actor="hana")
    setup.close()
    stores = [backend.open() for _ in range(3)]
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            for j in range(4):
                stores[i].users.add(f"u{i}-{j}", "Someone", email(f"u{i}-{j}"), ["auditor"],
                                    actor=["hana", "olga", "hana"][i])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reader = stores[0]
    assert len(reader.list_users()) == 2 + 12
    assert len(reader.users_log()) == 3 + 12
    assert reader.verify_users().ok
    for s in stores:
        s.close()


# ------------------------------------------------------------------------- chain and table check
def test_the_users_log_chain_verifies_without_the_key(headed: CaseStore, backend: Backend) -> None:
    report = headed.verify_users()
    assert report.ok and report.chain.events == 4 and report.differences == ()
    assert report.describe() == ["users log: audit chain verified (4 events)",
                                 "users table: matches the users log"]
    auditor = verifier_without_key(backend.url)
    assert auditor.verify_users_log().ok
    sql(headed, "UPDATE appeals_chain SET actor = 'olga' WHERE case_id = :id AND version = 3",
        id=str(USERS_LOG_ID))
    broken = verifier_without_key(backend.url).verify_users_log()
    assert (broken.ok, broken.broken_version) == (False, 3)
    assert not headed.verify_users().ok


def test_a_role_granted_in_the_table_alone_is_detected_by_name(headed: CaseStore) -> None:
    sql(headed, "UPDATE appeals_users SET roles = 'case_officer,head' WHERE username = 'olga'")
    # The doors (and the workers' role checks) go by the users log, not the table alone.
    assert headed.user_roles("olga") == {"case_officer"}
    report = headed.verify_users()
    assert not report.ok and report.chain.ok
    assert [(d.username, d.problem) for d in report.differences] == [
        ("olga", "roles in the users table differ from the users log")]
    assert "user olga: roles" in "\n".join(report.describe())


def test_other_changes_outside_the_log_are_detected(headed: CaseStore) -> None:
    headed.users.set_password("hana", HASH_1, actor="hana")
    sql(headed, "UPDATE appeals_users SET password_hash = :h WHERE username = 'hana'", h=HASH_2)
    sql(headed, "UPDATE appeals_users SET totp_secret = :s, active = :f WHERE username = 'lina'",
        s=TOTP, f=False)
    sql(headed, "INSERT INTO appeals_users (username, display_name, email, roles, active, created_at)"
                " VALUES ('mallory', 'M', 'm@example.org', 'head', :t, :at)", t=True, at=T0)
    sql(headed, "DELETE FROM appeals_users WHERE username = 'olga'")
    problems = {d.username: d.problem for d in headed.verify_users().differences}
    assert problems == {
        "hana": "password in the users table differ from the users log",
        "lina": "active, second_factor in the users table differ from the users log",
        "mallory": "in the users table but not in the users log",
        "olga": "in the users log but not in the users table",
    }


# ------------------------------------------------------------------------------------- sessions
LIFETIME = timedelta(hours=8)


def test_a_session_lives_until_it_expires(headed: CaseStore) -> None:
    token = headed.users.create_session("olga", "web", LIFETIME, now=T0)
    assert headed.users.session_user(token, T0 + timedelta(hours=7, minutes=59)) == "olga"
    assert headed.users.session_user(token, T0 + LIFETIME) is None
    assert headed.users.session_user("not-a-token", T0) is None
    assert headed.users.session_user("", T0) is None
    with headed.engine.connect() as conn:  # only the token's hash is stored
        ids = [r[0] for r in conn.execute(select(schema.sessions.c.id))]
    assert ids == [users.token_id(token)] and token not in ids


def test_an_idle_session_ends(headed: CaseStore) -> None:
    idle = timedelta(minutes=30)
    token = headed.users.create_session("olga", "web", LIFETIME, now=T0)
    assert headed.users.session_user(token, T0 + timedelta(minutes=20), idle=idle) == "olga"
    assert headed.users.session_user(token, T0 + timedelta(minutes=45), idle=idle) == "olga"
    assert headed.users.session_user(token, T0 + timedelta(minutes=90), idle=idle) is None


def test_sign_out_revocation_and_both_doors(headed: CaseStore) -> None:
    web = headed.users.create_session("olga", "web", LIFETIME, now=T0)
    cli = headed.users.create_session("olga", "cli", LIFETIME, now=T0)
    other = headed.users.create_session("lina", "web", LIFETIME, now=T0)
    assert headed.users.end_session(web) is True and headed.users.end_session(web) is False
    assert headed.users.session_user(web, T0) is None
    assert headed.users.session_user(cli, T0) == "olga"
    assert headed.users.revoke_sessions("olga") == 1
    assert headed.users.session_user(cli, T0) is None
    assert headed.users.session_user(other, T0) == "lina"
    with pytest.raises(ValueError):
        headed.users.create_session("olga", "api", LIFETIME)
    with pytest.raises(UnknownUser):
        headed.users.create_session("nobody", "web", LIFETIME)


def test_a_password_change_revokes_the_users_sessions(headed: CaseStore) -> None:
    token = headed.users.create_session("olga", "web", LIFETIME, now=T0)
    other = headed.users.create_session("lina", "web", LIFETIME, now=T0)
    headed.users.set_password("olga", HASH_1, actor="olga")
    assert headed.users.session_user(token, T0) is None
    assert headed.users.session_user(other, T0) == "lina"
    fresh = headed.users.create_session("olga", "web", LIFETIME, now=T0)
    assert headed.users.session_user(fresh, T0) == "olga"
    headed.users.set_password("olga", HASH_2, actor="hana")  # a head's reset too
    assert headed.users.session_user(fresh, T0) is None


def test_deactivation_revokes_the_users_sessions(headed: CaseStore) -> None:
    token = headed.users.create_session("olga", "cli", LIFETIME, now=T0)
    headed.users.deactivate("olga", "Left", actor="hana")
    assert headed.users.session_user(token, T0) is None
    with pytest.raises(UserInactive):
        headed.users.create_session("olga", "web", LIFETIME)
    headed.users.reactivate("olga", actor="hana")
    assert headed.users.session_user(token, T0) is None  # revoked for good


def test_a_session_of_a_user_deactivated_in_the_table_ends(headed: CaseStore) -> None:
    token = headed.users.create_session("olga", "web", LIFETIME, now=T0)
    sql(headed, "UPDATE appeals_users SET active = :f WHERE username = 'olga'", f=False)
    assert headed.users.session_user(token, T0) is None


def test_old_sessions_and_sign_ins_are_pruned(headed: CaseStore) -> None:
    expired = headed.users.create_session("olga", "web", timedelta(hours=1), now=T0)
    revoked = headed.users.create_session("olga", "cli", LIFETIME, now=T0)
    live = headed.users.create_session("lina", "web", LIFETIME, now=T0)
    headed.users.end_session(revoked, now=T0 + timedelta(minutes=5))
    assert headed.users.prune_sessions(T0 + timedelta(hours=2)) == 2
    assert headed.users.session_user(live, T0 + timedelta(hours=3)) == "lina"
    assert headed.users.session_user(expired, T0) is None
    headed.record_sign_in("olga", T0 - timedelta(days=100), ok=False, reason="password")
    headed.record_sign_in("olga", T0, ok=False, reason="password")
    assert headed.users.prune_sign_ins(T0 - timedelta(days=90)) == 1
    assert [r["at"] for r in headed.sign_in_log("olga")] == [T0]
