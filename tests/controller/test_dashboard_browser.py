"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium): log in,
the devices, an alert that appears without a reload, unblock, and the page at a phone's width."""

from __future__ import annotations

import pytest

from agent.wire import load_private_key
from controller.oneshot import fleet_rules
from controller.service import BrokerSettings
from controller.store import Store
from lab.dashboard_lab import DashboardLab, chromium_binary, headless_chromium
from lab.mqtt_helpers import FLEET, alert, make_agent, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_binary() is None,
                       reason="chromium and chromium-driver not installed (apt-get install chromium chromium-driver)"),
]  # fmt: skip


def test_log_in_see_the_fleet_watch_an_alert_arrive_and_unblock(broker, keys, tmp_path):
    from selenium.webdriver.common.by import By

    lab = DashboardLab.start(broker.host, broker.port, tmp_path, keys.private, refresh_s=1, k_devices=99)
    agents = [make_agent(broker.host, broker.port, tmp_path / d, d, keys.trusted) for d in ("pi-kitchen", "pi-garage")]
    for a, _ in agents:
        a.start()
    driver = headless_chromium(1280, 900)
    try:
        wait_until(lambda: lab.controller.ready.is_set() and all(a.ready for a, _ in agents), "everyone connected")
        agents[0][0].publish_status(packets_per_s=41.5, drops=0, model_version="default-860e134d99fc")
        with fleet_rules(lambda: Store(lab.controller.config.db), load_private_key(keys.private), "iotguard/v1",
                         BrokerSettings(broker.host, broker.port), "test-block") as rules:  # fmt: skip
            rules.block(FLEET, "192.0.2.0/24", "seen at the gateway", None)
            first = rules.block(FLEET, "203.0.113.66", "botnet C2", None).version
        wait_until(lambda: all(r.versions()[-1:] == [first] for _, r in agents), "blocks applied")

        def text(css: str) -> str:
            # In one script: the page's refresh replaces its live parts, and an element found before a refresh and
            # read after it is stale.
            return driver.execute_script("return Array.from(document.querySelectorAll(arguments[0]))"
                                         ".map(e => e.innerText).join(' ')", css)  # fmt: skip

        driver.get(lab.url + "/")
        assert driver.current_url == lab.url + "/login"
        token = driver.find_element(By.NAME, "token")
        token.send_keys("iotg_wrong")
        token.submit()
        wait_until(lambda: "not valid" in text("p.error"), "the login refused")
        driver.find_element(By.NAME, "token").send_keys(lab.admin)
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_until(lambda: "pi-kitchen" in text("#devices table"), "the devices listed")
        assert "pi-garage" in text("#devices table") and "2 online of 2" in text("#devices h2")
        assert "41.5" in text("#devices table") and "default-860e134d99fc" in text("#devices table")
        assert "lab admin (admin)" in text("header .who")

        agents[0][0].send_alert(alert("198.51.100.23", "mirai_syn"))
        # No reload here: the page's script refreshes its live parts.
        wait_until(lambda: "198.51.100.23" in text("#alerts table"), "the alert on the page", timeout=60)
        assert "mirai_syn" in text("#alerts table") and "mirai_syn (1)" in text("#alerts ul.legend")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#alerts svg.chart rect")) == 1

        clicked = driver.execute_script("for (const r of document.querySelectorAll('#blocks tbody tr'))"
                                        " if (r.innerText.includes(arguments[0])) {"
                                        " r.querySelector('button.danger').click(); return true; }"
                                        " return false;", "192.0.2.0/24")  # fmt: skip
        assert clicked, "no Unblock button for 192.0.2.0/24"
        wait_until(lambda: "Unblocked 192.0.2.0/24 in fleet lab" in text("p.flash"), "the unblock confirmed")
        assert "192.0.2.0/24" not in text("#blocks") and "203.0.113.66/32" in text("#blocks")
        wait_until(lambda: all(len(r.versions()) >= 3 for _, r in agents), "the agents applied the unblock")
        assert all([str(x.network) for x in r.applied[-1].rules] == ["203.0.113.66/32"] for _, r in agents)
        wait_until(lambda: "2 applied" in text("#rulesets tbody tr:first-child"), "both acks on the page", timeout=60)

        # A phone (as DevTools emulates one: a mobile viewport honours the viewport meta or lays out at 980 px):
        # one card per row, nothing wider than the screen.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True})  # fmt: skip
        driver.refresh()
        wait_until(lambda: "pi-kitchen" in text("#devices table"), "the page at phone width")
        width = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width == [390, 390], f"the page is not laid out for the phone's 390 px: {width}"
        assert driver.execute_script("return getComputedStyle(document.querySelector('#devices thead')).display") == "none"
        label = "return getComputedStyle(document.querySelector('#devices td'), '::before').content"
        assert driver.execute_script(label) == '"Device"'
        problems = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
                    and "/login - Failed to load resource: the server responded with a status of 401" not in e["message"]]
        assert not problems, problems  # a script error or Content-Security-Policy violation would show here
    finally:
        driver.quit()
        for a, _ in agents:
            a.stop()
        lab.stop()
