"""Console sign-in on a real SQLite store with a controlled clock: setup codes, Argon2id
passwords, TOTP (and its replay), lockout, idle and absolute session limits, sign-out
everywhere, and deactivation ending sessions at once."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest

from blocklist.authority.console import i18n
from blocklist.authority.console.accounts import Accounts, SignInPolicy, SignInRefused
from blocklist.authority.errors import Forbidden, Invalid
from blocklist.authority.roles import SYSTEM
from blocklist.authority.store import Store

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path):
    clock = Clock()
    store = Store(tmp_path / "authority.db", clock=clock)
    store.bootstrap_admin("admin")
    store.add_officer(SYSTEM, "alice", "officer")
    accounts = Accounts(store.db, SignInPolicy(max_failures=3, lockout_seconds=600))
    yield store, accounts, clock
    store.close()


def enrol(accounts: Accounts, name: str) -> pyotp.TOTP:
    code = accounts.reset(SYSTEM, name)
    totp = pyotp.TOTP(accounts.begin_setup(name, code, PASSWORD))
    accounts.finish_setup(name, code, totp.at(accounts.db.now()))
    return totp


def test_password_is_stored_as_argon2id_never_in_clear(setup) -> None:
    store, accounts, _clock = setup
    enrol(accounts, "alice")
    with store.db.read() as conn:
        row = conn.execute("SELECT password_hash, setup_hash FROM console_credentials").fetchone()
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert row["setup_hash"] is None  # the setup code is spent


def test_setup_code_is_one_time_and_expires(setup) -> None:
    _store, accounts, clock = setup
    code = accounts.reset(SYSTEM, "alice")
    with pytest.raises(Invalid, match="12"):
        accounts.begin_setup("alice", code, "short")
    with pytest.raises(Invalid, match="wrong or expired"):
        accounts.begin_setup("alice", "not-the-code", PASSWORD)
    totp = pyotp.TOTP(accounts.begin_setup("alice", code, PASSWORD))
    with pytest.raises(Invalid, match="not valid"):
        accounts.finish_setup("alice", code, "000000" if totp.now() != "000000" else "111111")
    accounts.finish_setup("alice", code, totp.at(clock.now))
    with pytest.raises(Invalid, match="wrong or expired"):
        accounts.begin_setup("alice", code, PASSWORD)
    late = accounts.reset(SYSTEM, "alice")
    clock.now += 25 * 3600
    with pytest.raises(Invalid, match="wrong or expired"):
        accounts.begin_setup("alice", late, PASSWORD)


def test_sign_in_needs_password_and_a_fresh_totp_code(setup) -> None:
    _store, accounts, clock = setup
    totp = enrol(accounts, "alice")
    with pytest.raises(SignInRefused):
        accounts.sign_in("alice", "wrong password!!", totp.at(clock.now))
    with pytest.raises(SignInRefused):
        accounts.sign_in("alice", PASSWORD, "123")
    secret, session = accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    assert session.principal.name == "alice" and session.principal.role == "officer"
    assert accounts.session(secret).principal.id == session.principal.id
    # The same code cannot sign in a second time (a shoulder-surfed or phished code).
    with pytest.raises(SignInRefused):
        accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    clock.now += 30
    accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    with pytest.raises(SignInRefused):
        accounts.sign_in("nobody", PASSWORD, totp.at(clock.now))


def test_repeated_failures_lock_the_account_even_for_the_right_password(setup) -> None:
    store, accounts, clock = setup
    totp = enrol(accounts, "alice")
    for n in range(1, 3):
        with pytest.raises(SignInRefused) as exc:
            accounts.sign_in("alice", "guess number " + str(n), totp.at(clock.now))
        assert exc.value.failures == n and not exc.value.locked
    with pytest.raises(SignInRefused) as exc:
        accounts.sign_in("alice", "guess number 3", totp.at(clock.now))
    assert exc.value.locked
    with pytest.raises(SignInRefused) as exc:
        accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    assert exc.value.locked
    clock.now += 601
    accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    actions = [r["action"] for r in store.audit_log(SYSTEM)]
    assert "console.locked" in actions and "console.sign_in" in actions


def test_sessions_end_when_idle_too_old_signed_out_or_deactivated(setup) -> None:
    store, accounts, clock = setup
    totp = enrol(accounts, "alice")
    first, s1 = accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    clock.now += 30
    second, _ = accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    assert accounts.session(first) and accounts.session(second)
    accounts.sign_out(s1, everywhere=True)
    assert accounts.session(first) is None and accounts.session(second) is None

    clock.now += 30
    third, _ = accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    clock.now += 1801
    assert accounts.session(third) is None  # idle

    clock.now += 30
    fourth, _ = accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    assert accounts.session(fourth) is not None
    admin = store.authenticate(store.issue_token(SYSTEM, officer="admin")["token"])
    store.deactivate_officer(admin, "alice", "left the unit")
    assert accounts.session(fourth) is None
    clock.now += 30
    with pytest.raises(SignInRefused):
        accounts.sign_in("alice", PASSWORD, totp.at(clock.now))


def test_reset_needs_manage_and_is_never_self_service(setup) -> None:
    store, accounts, clock = setup
    alice = store.authenticate(store.issue_token(SYSTEM, officer="alice")["token"])
    admin = store.authenticate(store.issue_token(SYSTEM, officer="admin")["token"])
    with pytest.raises(Forbidden):
        accounts.reset(alice, "admin")
    with pytest.raises(Forbidden, match="another admin"):
        accounts.reset(admin, "admin")
    totp = enrol(accounts, "alice")
    secret, _ = accounts.sign_in("alice", PASSWORD, totp.at(clock.now))
    accounts.reset(admin, "alice")  # a reset ends the officer's sessions
    assert accounts.session(secret) is None


def test_every_console_word_is_translated_in_three_languages() -> None:
    for key, words in i18n.CATALOGUE.items():
        assert len(words) == len(i18n.LANGUAGES), key
        assert all(w.strip() for w in words), key
    assert i18n.pick("ar,en;q=0.5", None, None) == "ar"
    assert i18n.pick("de", "fr", "en") == "fr"
    assert i18n.pick("de", None, None) == "en"


def test_cli_issues_a_setup_code_offline_that_the_console_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from blocklist import cli

    config = tmp_path / "authority.toml"
    config.write_text('[authority]\nstate_dir = "state"\n')
    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state" / "authority.db")
    store.bootstrap_admin("admin")
    store.close()
    assert cli.main(["--json", "officer", "console-code", "admin", "--config", str(config)]) == 0
    code = json.loads(capsys.readouterr().out)["setup_code"]
    assert cli.main(["officer", "console-code", "nobody", "--config", str(config)]) != 0
    assert "nobody" in capsys.readouterr().err
    store = Store(tmp_path / "state" / "authority.db")
    try:
        accounts = Accounts(store.db)
        totp = pyotp.TOTP(accounts.begin_setup("admin", code, PASSWORD))
        accounts.finish_setup("admin", code, totp.now())
        _, session = accounts.sign_in("admin", PASSWORD, totp.now())
        assert session.principal.role == "admin"
    finally:
        store.close()
