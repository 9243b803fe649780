"""Dashboard sign-in: users CLI, passwords, session cookies, CSRF, lock-out, expiry."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from test_web_helpers import PASSWORD, TENANTS, Client, cheap_hashes_fixture, web_fixture  # noqa: F401

from esl_app.cli import cli
from esl_app.db import close_db
from esl_app.db.models import AuditLog, WebLoginFailure, WebSession, WebUser, utcnow
from esl_app.scheduling.errors import InvalidRequest, NotAllowed, NotFound
from esl_app.web import auth
from esl_app.web.routes import WebConfig, create_web_app

# ---------------------------------------------------------------- ivr users


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)
    monkeypatch.setenv("IVR_TENANTS", str(tenants))
    monkeypatch.setenv("IVR_DATABASE_URL", f"sqlite:///{tmp_path / 'web.db'}")
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "init"]).exit_code == 0
    assert runner.invoke(cli, ["tenants", "import"]).exit_code == 0
    yield runner
    close_db()


def test_users_add_list_remove(cli_env):
    r = cli_env.invoke(cli, ["users", "add", "Alice", "--tenant", "sunrise", "--password-stdin"],
                       input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    assert "added staff alice to sunrise" in r.output
    r = cli_env.invoke(cli, ["users", "add", "olga", "--tenant", "lakeside", "--operator"],
                       input=f"{PASSWORD}\n{PASSWORD}\n")  # the prompt asks twice
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    r = cli_env.invoke(cli, ["users", "list", "--tenant", "sunrise", "--json"])
    rows = json.loads(r.output)
    assert [(u["username"], u["role"]) for u in rows] == [("alice", "staff")]
    assert "hash" not in r.output
    r = cli_env.invoke(cli, ["users", "list", "--tenant", "lakeside"])
    assert "olga" in r.output and "operator" in r.output
    stored = WebUser.get(WebUser.username == "alice").password_hash
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    # remove: only from the right tenant
    r = cli_env.invoke(cli, ["users", "remove", "alice", "--tenant", "lakeside"])
    assert r.exit_code == 1 and "error: no user 'alice' at tenant 'lakeside'" in r.output
    r = cli_env.invoke(cli, ["users", "remove", "alice", "--tenant", "sunrise"])
    assert r.exit_code == 0 and "removed alice" in r.output
    assert not WebUser.select().where(WebUser.username == "alice").exists()
    actions = [(a.action, a.entity_id) for a in AuditLog.select().where(AuditLog.entity == "user")]
    assert ("create", "alice") in actions and ("remove", "alice") in actions


@pytest.mark.parametrize("args, stdin, message", [
    (["users", "add", "x!", "--tenant", "sunrise", "--password-stdin"], PASSWORD + "\n",
     "a username is 2-64 characters"),
    (["users", "add", "carl", "--tenant", "sunrise", "--password-stdin"], "short\n",
     "at least 10 characters"),
    (["users", "add", "carl", "--tenant", "sunrise", "--password-stdin"], "tab\there long!\n",
     "control characters"),
    (["users", "add", "carl", "--tenant", "nowhere", "--password-stdin"], PASSWORD + "\n",
     "unknown tenant 'nowhere'"),
    (["users", "list", "--tenant", "nowhere"], "", "unknown tenant 'nowhere'"),
])
def test_users_cli_refuses_bad_input(cli_env, args, stdin, message):
    r = cli_env.invoke(cli, args, input=stdin)
    assert r.exit_code == 1, r.output
    assert message in r.output and r.output.count("error:") == 1


def test_users_add_twice_is_refused(cli_env):
    args = ["users", "add", "dora", "--tenant", "sunrise", "--password-stdin"]
    assert cli_env.invoke(cli, args, input=PASSWORD + "\n").exit_code == 0
    r = cli_env.invoke(cli, [*args[:4], "lakeside", *args[5:]], input=PASSWORD + "\n")
    assert r.exit_code == 1 and "already exists" in r.output


def test_users_is_listed_in_help(cli_env):
    r = cli_env.invoke(cli, ["--help"])
    assert "users" in r.output
    r = cli_env.invoke(cli, ["users", "add", "--help"])
    assert "--password-stdin" in r.output and "--operator" in r.output


# ---------------------------------------------------------------- sign-in over HTTP


def test_sign_in_sets_a_strict_http_only_session_cookie(web):
    c = Client(web.app)
    c.get("/ui/login")
    r = c.post("/ui/login", {"username": "Alice", "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/ui/t/sunrise/today"
    cookie = r.cookies["ivr_session"]
    assert cookie.http_only and cookie.path == "/ui" and cookie.same_site == "Strict"
    assert not cookie.secure  # plain HTTP, no trusted proxy
    assert len(cookie.value) >= 40
    assert WebSession.select().count() == 1
    assert WebSession.get().token_hash != cookie.value  # only a hash is stored
    assert c.get("/ui/t/sunrise/today").status_code == 200
    assert AuditLog.select().where((AuditLog.action == "sign_in")
                                   & (AuditLog.actor == "web:alice")).exists()


def test_secure_cookie_behind_tls_only_when_the_proxy_is_trusted(web):
    for trusted, expect in ((False, False), (True, True)):
        app = create_web_app(WebConfig(trust_proxy=trusted))
        c = Client(app)
        c.get("/ui/login")
        r = c.post("/ui/login", {"username": "alice", "password": PASSWORD},
                   headers={"X-Forwarded-Proto": "https"})
        assert r.status_code == 303
        assert r.cookies["ivr_session"].secure is expect


def test_wrong_password_and_unknown_user_look_the_same(web):
    c = Client(web.app)
    c.get("/ui/login")
    r1 = c.post("/ui/login", {"username": "alice", "password": "wrong password!"})
    r2 = c.post("/ui/login", {"username": "nobody", "password": "wrong password!"})
    assert r1.status_code == r2.status_code == 401
    assert "Wrong username or password." in r1.text and "Wrong username or password." in r2.text
    assert "ivr_session" not in c.cookies
    assert 'value="alice"' in r1.text  # the username is kept in the form, never the password
    assert "wrong password!" not in r1.text


def test_login_form_needs_its_csrf_token(web):
    c = Client(web.app)
    c.get("/ui/login")
    r = c.post("/ui/login", {"username": "alice", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403 and "ivr_session" not in c.cookies
    c.cookies.pop("ivr_login_csrf")
    r = c.post("/ui/login", {"username": "alice", "password": PASSWORD, "csrf": c.csrf})
    assert r.status_code == 403 and "ivr_session" not in c.cookies


def test_next_is_followed_only_inside_the_dashboard(web):
    c = Client(web.app)
    r = c.get("/ui/t/sunrise/calls?outcome=booked")
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=/ui/t/sunrise/calls%3Foutcome%3Dbooked"
    page = c.get(r.headers["location"])
    assert 'name="next" value="/ui/t/sunrise/calls?outcome=booked"' in page.text
    r = c.post("/ui/login", {"username": "alice", "password": PASSWORD,
                             "next": "/ui/t/sunrise/calls?outcome=booked"})
    assert r.headers["location"] == "/ui/t/sunrise/calls?outcome=booked"
    for evil in ("https://evil.example/", "//evil.example/ui/", "/ui/\\evil", "/elsewhere",
                 "/ui//evil.example"):
        c2 = Client(web.app)
        c2.get("/ui/login")
        r = c2.post("/ui/login", {"username": "alice", "password": PASSWORD, "next": evil})
        assert r.headers["location"] == "/ui/t/sunrise/today", evil


def test_operator_lands_on_the_clinic_list(web):
    c = web.client("olga")
    r = c.get("/ui")
    assert r.status_code == 303 and r.headers["location"] == "/ui/tenants"


def test_sign_out_ends_the_session_everywhere(web):
    c = web.client("alice")
    token = c.cookies["ivr_session"]
    assert c.get("/ui/t/sunrise/today").status_code == 200
    r = c.post("/ui/logout")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert "ivr_session" not in c.cookies
    c.cookies["ivr_session"] = token  # a copied cookie is worthless now
    assert c.get("/ui/t/sunrise/today").status_code == 303
    assert WebSession.select().count() == 0


def test_removing_a_user_signs_them_out(web):
    c = web.client("alice")
    auth.remove_user("sunrise", "alice")
    r = c.get("/ui/t/sunrise/today")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_sessions_expire_when_idle_or_too_old(web):
    token, session = auth.sign_in("alice", PASSWORD, "10.0.0.9")
    assert auth.session_for(token) == session
    later = utcnow() + auth.SESSION_IDLE + timedelta(minutes=1)
    assert auth.session_for(token, now=later) is None
    token, _ = auth.sign_in("alice", PASSWORD, "10.0.0.9")
    # kept alive every hour, but no longer than SESSION_MAX in all
    start = utcnow()
    hours = int(auth.SESSION_MAX.total_seconds() // 3600)
    for i in range(1, hours):
        assert auth.session_for(token, now=start + timedelta(hours=i)) is not None
    assert auth.session_for(token, now=start + auth.SESSION_MAX + timedelta(minutes=1)) is None
    assert auth.session_for("x" * 500) is None and auth.session_for(None) is None


def test_post_without_a_session_is_refused(web):
    c = Client(web.app)
    r = c.post(f"/ui/t/sunrise/appointments/{web.codes['sunrise-later']}/cancel",
               {"csrf": "x"})
    assert r.status_code == 403
    assert "sign in" in r.text


# ---------------------------------------------------------------- lock-out


def test_lock_out_per_user_after_five_failures(web):
    c = Client(web.app, address="10.0.0.2")
    c.get("/ui/login")
    for _ in range(auth.LOCK_FAILURES):
        assert c.post("/ui/login", {"username": "alice", "password": "nope nope nope"}
                      ).status_code == 401
    # even the right password, and from another address, is refused now
    other = Client(web.app, address="10.0.0.3")
    other.get("/ui/login")
    r = other.post("/ui/login", {"username": "alice", "password": PASSWORD})
    assert r.status_code == 429
    assert "Too many failed sign-ins" in r.text
    assert 0 < int(r.headers["retry-after"]) <= auth.LOCK_WINDOW.total_seconds() + 1
    assert "ivr_session" not in other.cookies
    # another user from that second address is not affected
    assert other.post("/ui/login", {"username": "bob", "password": PASSWORD}).status_code == 303
    # the window passes: alice may sign in again (and the count starts over)
    later = utcnow() + auth.LOCK_WINDOW + timedelta(seconds=5)
    assert auth.sign_in("alice", PASSWORD, "10.0.0.3", now=later) is not None


def test_lock_out_per_address_across_usernames(web):
    c = Client(web.app, address="10.9.9.9")
    c.get("/ui/login")
    for i in range(auth.LOCK_FAILURES):
        assert c.post("/ui/login", {"username": f"guess{i}", "password": "nope nope nope"}
                      ).status_code == 401
    r = c.post("/ui/login", {"username": "alice", "password": PASSWORD})
    assert r.status_code == 429
    # alice herself, from her own desk, is fine
    assert web.client("alice", address="10.0.0.1").cookies.get("ivr_session")


def test_forwarded_for_counts_only_behind_a_trusted_proxy(web):
    untrusted = Client(create_web_app(WebConfig(trust_proxy=False)), address="10.1.1.1")
    untrusted.get("/ui/login")
    for i in range(auth.LOCK_FAILURES):
        untrusted.post("/ui/login", {"username": f"x{i}", "password": "nope nope nope"},
                       headers={"X-Forwarded-For": f"192.0.2.{i}"})
    # a forged header does not spread the failures: the real address is locked
    assert untrusted.post("/ui/login", {"username": "alice", "password": PASSWORD},
                          headers={"X-Forwarded-For": "192.0.2.200"}).status_code == 429
    trusted = Client(create_web_app(WebConfig(trust_proxy=True)), address="10.2.2.2")
    trusted.get("/ui/login")
    for i in range(auth.LOCK_FAILURES):
        trusted.post("/ui/login", {"username": f"y{i}", "password": "nope nope nope"},
                     headers={"X-Forwarded-For": "198.51.100.7"})
    assert trusted.post("/ui/login", {"username": "alice", "password": PASSWORD},
                        headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    assert trusted.post("/ui/login", {"username": "alice", "password": PASSWORD},
                        headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 303


def test_failures_hold_no_address_or_name_and_are_cleaned_up(web):
    auth.sign_in("alice", "bad password!", "203.0.113.5")
    keys = [r.key for r in WebLoginFailure.select()]
    assert len(keys) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
    later = utcnow() + auth.LOCK_WINDOW + timedelta(minutes=1)
    auth.sign_in("alice", "bad password!", "203.0.113.5", now=later)
    assert WebLoginFailure.select().count() == 2  # the old ones went


def test_success_clears_the_users_failures(web):
    for _ in range(auth.LOCK_FAILURES - 1):
        assert auth.sign_in("alice", "bad password!", f"10.3.0.{_}") is None
    assert auth.sign_in("alice", PASSWORD, "10.3.1.1") is not None
    for _ in range(auth.LOCK_FAILURES - 1):
        assert auth.sign_in("alice", "bad password!", f"10.3.2.{_}") is None
    assert auth.sign_in("alice", PASSWORD, "10.3.1.2") is not None  # not locked


def test_auth_api_refuses_bad_users(web):
    with pytest.raises(InvalidRequest):
        auth.add_user("sunrise", "a", PASSWORD)
    with pytest.raises(InvalidRequest):
        auth.add_user("sunrise", "carol", "x" * (auth.MAX_PASSWORD + 1))
    with pytest.raises(NotAllowed):
        auth.add_user("lakeside", "ALICE", PASSWORD)
    with pytest.raises(NotFound):
        auth.add_user("nowhere", "carol", PASSWORD)
    assert auth.sign_in("alice", "", "10.0.0.1") is None
    assert auth.sign_in("alice", "y" * 5000, "10.0.0.1") is None


def test_weaker_hashes_are_upgraded_at_sign_in(web):
    from argon2 import PasswordHasher

    old = WebUser.get(WebUser.username == "alice").password_hash
    auth.set_hasher(PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    assert auth.sign_in("alice", PASSWORD, "10.0.0.1") is not None
    new = WebUser.get(WebUser.username == "alice").password_hash
    assert new != old and "t=2" in new


def test_signing_in_again_ends_the_previous_session(web):
    c = web.client("alice")
    first = c.cookies["ivr_session"]
    form = Client(web.app)
    form.get("/ui/login")  # a signed-in browser is sent home from the form: take one
    c.cookies["ivr_login_csrf"] = form.cookies["ivr_login_csrf"]
    r = c.post("/ui/login", {"username": "bob", "password": PASSWORD,
                             "csrf": form.cookies["ivr_login_csrf"]})
    assert r.status_code == 303 and r.headers["location"] == "/ui/t/lakeside/today"
    assert c.cookies["ivr_session"] != first
    assert auth.session_for(first) is None
    assert WebSession.select().count() == 1
