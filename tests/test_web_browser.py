"""The dashboard in a real browser: headless Chromium driven by Selenium.

Signs in, books and cancels through the pages, moves a booking and marks a patient
arrived, reads a call, marks a callback done, reads the reminders, turns drain on and off
on the operators' live page and watches a live call appear there (server-sent events)
while an emulated call runs and leave when it hangs up, then reads every page again with
JavaScript off. Each page is
saved as a screenshot under the test's tmp dir and copied to a stable folder
(``var/screenshots/dashboard`` in the checkout, or ``$IVR_SCREENSHOT_DIR``) that the test
prints. Needs Debian's ``chromium`` and ``chromium-driver`` (``./dev test`` installs them).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_web_helpers import PASSWORD, TENANTS, build_env, cheap_hashes_fixture  # noqa: F401

from esl_app.config.tenants import parse_tenants
from esl_app.db import close_db
from esl_app.db.models import Appointment, Attendance, AuditLog, CallbackTicket, CallRecord
from esl_app.http.app import serve_http
from esl_app.sim.emulator.core import Switch
from esl_app.sim.emulator.inbound import InboundServer
from esl_app.web import live, routes

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER and HAVE_SELENIUM),
    reason="no headless browser: needs Debian's chromium and chromium-driver and pip's "
           "selenium (./dev test installs them)")


def _driver(javascript: bool = True) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1180,900", "--disable-extensions", "--no-first-run",
                "--password-store=basic", "--lang=en-US"):
        opts.add_argument(arg)
    if not javascript:
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)


class Shots:
    """Numbered full-window screenshots, copied to the stable folder at the end."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "screenshots"
        self.dir.mkdir()
        self.n = 0

    def take(self, driver: Any, name: str, width: int = 1180) -> None:
        self.n += 1
        height = driver.execute_script("return document.body.scrollHeight") \
            if driver.capabilities.get("javascriptEnabled", True) else None
        if height:
            driver.set_window_size(width, min(max(int(height) + 120, 900), 4000))
        assert driver.save_screenshot(str(self.dir / f"{self.n:02d}-{name}.png"))
        driver.set_window_size(1180, 900)

    def publish(self) -> Path:
        stable = Path(os.environ.get("IVR_SCREENSHOT_DIR")
                      or ROOT / "var" / "screenshots" / "dashboard")
        stable.mkdir(parents=True, exist_ok=True)
        for old in stable.glob("*.png"):
            old.unlink()
        for shot in sorted(self.dir.glob("*.png")):
            shutil.copy2(shot, stable / shot.name)
        return stable


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[tuple[Any, str, Switch]]:
    """The dashboard on ``serve_http``, and an emulated switch answering its event socket."""
    monkeypatch.setattr(routes, "LIVE_TICK", 0.3)
    switch = Switch(password="S3cret")
    esl = InboundServer(switch, "127.0.0.1", 0).start()
    monkeypatch.setenv("FS_ESL_HOST", esl.address[0])
    monkeypatch.setenv("FS_ESL_PORT", str(esl.address[1]))
    monkeypatch.setenv("FS_ESL_PASSWORD", "S3cret")
    live.forget_probes()
    live.forget_providers()
    env = build_env(tmp_path)
    server = serve_http("127.0.0.1", 0)
    yield env, f"http://127.0.0.1:{server.server_port}", switch
    server.stop(timeout=1)
    esl.stop()
    live.forget_probes()
    live.forget_providers()
    close_db()


def _reminder_data(env: Any) -> None:
    """A reminder that was called and one still due, and a do-not-call entry, for sunrise."""
    from esl_app.db.models import ReminderCall
    from esl_app.reminders import store

    for key, state, outcome in (("sunrise-later", "done", "reminder_confirmed"),
                                ("sunrise-today", "due", None)):
        appt = Appointment.get(Appointment.code == env.codes[key])
        ReminderCall.create(tenant="sunrise", appointment=appt.id, hours_before=24,
                            due_at=appt.slot.start, next_at=appt.slot.start, state=state,
                            attempts=1 if outcome else 0, outcome=outcome)
    store.add_do_not_call("sunrise", "+1 555 000 4321", source="call")


def _sign_in(driver: Any, base: str, username: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/ui/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit].primary").click()


def test_dashboard_in_a_real_browser(site, tmp_path, capsys):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from esl_app.sim.simulate import SimCall, start_local_bot

    env, base, switch = site
    _reminder_data(env)
    shots = Shots(tmp_path)
    driver = _driver()
    bot = None
    sim = None
    try:
        # the live panel is replaced by each server-sent update: an element found a moment
        # ago may be gone, so live checks are waits that look again
        wait = WebDriverWait(driver, 10, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,))
        # -- sign in: the wrong password first
        driver.get(base + "/ui/")
        assert "/ui/login" in driver.current_url
        driver.find_element(By.ID, "username").send_keys("alice")
        driver.find_element(By.ID, "password").send_keys("not the password")
        shots.take(driver, "login")
        driver.find_element(By.ID, "password").submit()
        assert "Wrong username or password." in driver.find_element(By.ID, "login-error").text
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "password").submit()
        wait.until(ec.url_contains("/ui/t/sunrise/today"))
        assert "Today Patient sunrise" in driver.page_source
        shots.take(driver, "today")
        # a tablet held upright at the front desk: nothing runs off the side
        driver.set_window_size(820, 1180)
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        shots.take(driver, "today-tablet", width=820)

        # -- keyboard: the skip link is the first stop and moves to the content
        from selenium.webdriver.common.keys import Keys

        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert driver.switch_to.active_element.get_attribute("class") == "skip"

        # -- book from the week view, then cancel
        slot_day = env.now.date().isoformat()
        driver.get(f"{base}/ui/t/sunrise/week?doctor=smith&start={slot_day}")
        shots.take(driver, "week")
        link = driver.find_elements(By.CSS_SELECTOR, "td.st-free a")[-1]
        link.click()
        wait.until(ec.url_contains("/ui/t/sunrise/book"))
        driver.find_element(By.ID, "patient_name").send_keys("Browser Patient")
        driver.find_element(By.ID, "phone").send_keys("+1 555 010 7777")
        shots.take(driver, "book")
        driver.find_element(By.CSS_SELECTOR, "button.primary").click()
        wait.until(ec.url_contains("/ui/t/sunrise/appointments/"))
        code = driver.current_url.rsplit("/", 1)[1]
        assert f"Booked {code}." in driver.find_element(By.CSS_SELECTOR, ".flash").text
        assert Appointment.get(Appointment.code == code).status == "booked"
        shots.take(driver, "appointment")
        driver.find_element(By.CSS_SELECTOR, "button.danger").click()
        alert = wait.until(ec.alert_is_present())
        assert "Browser Patient" in alert.text
        alert.dismiss()  # "no": nothing happens
        assert Appointment.get(Appointment.code == code).status == "booked"
        driver.find_element(By.CSS_SELECTOR, "button.danger").click()
        wait.until(ec.alert_is_present()).accept()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"),
                                                    f"Appointment {code} cancelled."))
        assert Appointment.get(Appointment.code == code).status == "cancelled"
        shots.take(driver, "cancelled")

        # -- move another booking to a free time, then mark today's patient arrived
        later = env.codes["sunrise-later"]
        before = Appointment.get(Appointment.code == later).slot_id
        driver.get(f"{base}/ui/t/sunrise/appointments/{later}")
        driver.find_element(By.CSS_SELECTOR, "#move-h ~ form button").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[name=slot]")))
        driver.find_elements(By.CSS_SELECTOR, "input[name=slot]")[-1].click()
        shots.take(driver, "appointment-move")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/move'] button.primary").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"),
                                                    f"Appointment {later} moved."))
        moved = Appointment.get(Appointment.code == later)
        assert moved.slot_id != before and moved.status == "booked"
        driver.get(base + "/ui/t/sunrise/today")
        driver.find_element(By.CSS_SELECTOR, "button[name=state][value=arrived]").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"),
                                                    "marked arrived"))
        assert Attendance.select().count() == 1
        assert AuditLog.select().where(AuditLog.actor == "web:alice").count() > 0
        shots.take(driver, "today-arrived")

        # -- calls, a transcript, callbacks, reminders
        driver.get(base + "/ui/t/sunrise/calls")
        shots.take(driver, "calls")
        driver.find_element(By.CSS_SELECTOR, "tbody th a").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "mark.barge")))
        shots.take(driver, "call")
        driver.get(base + "/ui/t/sunrise/callbacks")
        shots.take(driver, "callbacks")
        driver.find_element(By.CSS_SELECTOR, "form[action$='/done'] button").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".flash")))
        assert CallbackTicket.get_by_id(env.tickets["sunrise"]).status == "done"
        # another clinic's page is a plain "no such clinic" page
        driver.get(base + "/ui/t/lakeside/today")
        assert "Lakeside" not in driver.page_source
        shots.take(driver, "not-found")
        driver.get(base + "/ui/t/sunrise/reminders")
        assert "reminder confirmed" in driver.page_source.lower()
        assert "********21" in driver.page_source  # the do-not-call number, masked
        shots.take(driver, "reminders")
        driver.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
        wait.until(ec.url_contains("/ui/login"))

        # -- the operator watches a call come and go on the live page
        _sign_in(driver, base, "olga")
        wait.until(ec.url_contains("/ui/tenants"))
        shots.take(driver, "clinics")
        driver.get(base + "/ui/live")
        wait.until(lambda d: d.find_element(By.ID, "live").get_attribute("data-live")
                   == "connected")
        wait.until(lambda d: d.find_element(By.ID, "live-count").text == "0")
        wait.until(lambda d: d.find_element(By.ID, "drain-state").get_attribute("data-drain")
                   == "off")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#providers tr[data-provider]"))
        shots.take(driver, "live-idle")
        driver.find_element(By.ID, "drain-on").click()
        wait.until(ec.alert_is_present()).accept()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "Drain on"))
        assert switch.global_vars["ivr_drain"] == "true"
        wait.until(lambda d: d.find_element(By.ID, "drain-state").get_attribute("data-drain")
                   == "on")
        shots.take(driver, "live-drain-on")
        driver.find_element(By.ID, "drain-off").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "Drain off"))
        assert switch.global_vars["ivr_drain"] == "false"
        wait.until(lambda d: d.find_element(By.ID, "live").get_attribute("data-live")
                   == "connected")
        bot = start_local_bot(parse_tenants(TENANTS))
        sim = SimCall(bot.address, "1001", "+15550104242", time_scale=0.05).start()
        assert sim.act("I would like to book an appointment")
        call_id = sim.call.uuid
        wait.until(lambda d: "sunrise" in (row := d.find_element(
            By.CSS_SELECTOR, f"tr[data-call='{call_id}']")).text and "**********42" in row.text)
        wait.until(lambda d: d.find_element(By.ID, "live-count").text == "1")
        shots.take(driver, "live-call")
        sim.call.hang_up()
        assert sim.call.wait_ended(10)
        wait.until(ec.invisibility_of_element_located(
            (By.CSS_SELECTOR, f"tr[data-call='{call_id}']")))
        assert CallRecord.get(CallRecord.call_id == call_id).outcome != "in_progress"
        shots.take(driver, "live-after")
    finally:
        driver.quit()
        if bot is not None:
            bot.stop()

    # -- JavaScript off: every read-only page still shows its data
    driver = _driver(javascript=False)
    try:
        _sign_in(driver, base, "olga")
        time.sleep(0.2)
        for path, expect in (("/ui/t/sunrise/today", "Dr. Sarah Smith"),
                             ("/ui/t/sunrise/week", "Week of"),
                             ("/ui/t/sunrise/calls", "caller hangup"),
                             (f"/ui/t/sunrise/calls/{env.calls['sunrise']}",
                              "interrupted by the caller"),
                             ("/ui/t/sunrise/callbacks?show=all", "Caller of sunrise"),
                             ("/ui/t/sunrise/reminders", "Reminders"),
                             ("/ui/t/lakeside/today", "Today Patient lakeside"),
                             ("/ui/live", "Calls in progress")):
            driver.get(base + path)
            assert expect in driver.page_source, path
        assert driver.find_element(By.ID, "live").get_attribute("data-live") is None
        shots.take(driver, "live-no-javascript")
    finally:
        driver.quit()
    stable = shots.publish()
    with capsys.disabled():
        print(f"\n  dashboard screenshots ({shots.n}): {stable}")
