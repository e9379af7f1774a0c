"""Screenshots of the controller's dashboard for the README: ``python -m lab.dashboard_screenshot``.

A small fleet on a real mosquitto (four agents, one of them gone offline), a day of alert history written
straight into the controller's database (the chart needs hours that a screenshot run does not have), live
alerts that cross the K-devices policy, a manual block, a model push, then headless Chromium takes
docs/dashboard.png (desktop) and docs/dashboard-phone.png (a 390 px phone).  Needs mosquitto, chromium and
chromium-driver.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from agent.wire import load_private_key, trusted_keys
from agent.wire.signing import generate_key, save_keypair
from controller.broker import MosquittoBroker
from controller.oneshot import fleet_rules
from controller.service import BrokerSettings
from controller.store import Store
from lab import REPO
from lab.dashboard_lab import DashboardLab, headless_chromium
from lab.mqtt_helpers import alert, make_agent, wait_until

FLEET = "home"
DEVICES = ("pi-kitchen", "pi-garage", "pi-livingroom", "bbb-shed")
# (hours ago, class, alerts, sources): the day the chart shows.
HISTORY = [(22, "mirai_scan", 14, 9), (19, "mirai_scan", 6, 4), (16, "mirai_syn", 9, 2), (15.5, "mirai_syn", 12, 2),
           (11, "mirai_udp", 7, 3), (8, "mirai_scan", 10, 8), (6, "mirai_ack", 5, 1), (3, "mirai_udpplain", 6, 2),
           (2.5, "anomaly", 2, 1), (1, "mirai_scan", 8, 6)]  # fmt: skip


def history(store: Store, now: float, rng: random.Random) -> None:
    seq = {d: 1000 for d in DEVICES}
    for hours, cls, count, sources in HISTORY:
        for i in range(count):
            device = rng.choice(DEVICES[:3])
            seq[device] += 1
            at = now - hours * 3600 + rng.uniform(0, 1500)
            doc = {**alert(f"203.0.113.{10 + (i % sources)}", cls, round(rng.uniform(0.8, 0.99), 2)),
                   "fleet": FLEET, "device": device, "seq": seq[device], "first_seen": at - 5, "last_seen": at,
                   "sent_at": at}  # fmt: skip
            store.add_alert(doc, at)


def shrink(path: Path) -> None:
    """256 colours are plenty for a page of text; a third of the bytes in the repository (Pillow, if there)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256)
    small.save(path, optimize=True)


def run(out: Path, work: Path) -> None:
    rng = random.Random(7)
    broker = MosquittoBroker(work / "broker").start()
    key = generate_key()
    save_keypair(key, work / "signing.key", work / "signing.pub")
    trusted = trusted_keys([key.public_key()])
    lab = DashboardLab.start(broker.host, broker.port, work, work / "signing.key", refresh_s=0, k_devices=2)
    agents = [make_agent(broker.host, broker.port, work / d, d, trusted, fleet=FLEET, on_model=lambda meta, tflite: None)
              for d in DEVICES]  # fmt: skip
    driver = None
    try:
        for a, _ in agents:
            a.start()
        wait_until(lambda: lab.controller.ready.is_set() and all(a.ready for a, _ in agents), "fleet connected")
        history(lab.tokens.store, time.time(), rng)
        model = (REPO / "agent" / "model" / "default.tflite").read_bytes()
        with fleet_rules(lambda: Store(lab.controller.config.db), load_private_key(work / "signing.key"), "iotguard/v1",
                         BrokerSettings(broker.host, broker.port), "screenshot") as rules:  # fmt: skip
            rules.block(FLEET, "198.51.100.0/24", "seen at the gateway", None)
            rules.push_model(FLEET, list(DEVICES[:3]), {"version": "default-860e134d99fc"}, model)
        for (a, _), pps, cpu, rss in zip(agents, (412.3, 88.1, 1530.7), (7.5, 3.1, 18.2), (71e6, 64e6, 104e6)):
            a.publish_status(packets_per_s=pps, drops=0, cpu_percent=cpu, rss_bytes=rss)
        agents[0][0].send_alert(alert("203.0.113.66", "mirai_syn", 0.97))
        agents[1][0].send_alert(alert("203.0.113.66", "mirai_syn", 0.95))  # a second device: the policy blocks it
        wait_until(lambda: lab.tokens.store.count("blocks") == 2, "the policy block")
        wait_until(lambda: lab.tokens.store.rulesets()[0]["applied"] == 4, "every device applied the newest rule set")
        agents[3][0].stop()  # bbb-shed goes offline (its last status)
        wait_until(lambda: any(d["state"] == "offline" for d in lab.tokens.store.devices()), "bbb-shed offline")

        driver = headless_chromium(1280, 900)
        driver.get(lab.url + "/login")
        driver.find_element("name", "token").send_keys(lab.admin)
        driver.find_element("css selector", "form.login button").click()
        wait_until(lambda: "pi-kitchen" in driver.page_source, "the fleet page")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, height + 140)  # the whole page in one picture
        driver.save_screenshot(str(out / "dashboard.png"))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})  # fmt: skip
        driver.refresh()
        wait_until(lambda: "pi-kitchen" in driver.page_source, "the fleet page on a phone")
        driver.save_screenshot(str(out / "dashboard-phone.png"))
        for name in ("dashboard.png", "dashboard-phone.png"):
            shrink(out / name)
        print(f"wrote {out / 'dashboard.png'} and {out / 'dashboard-phone.png'}")
    finally:
        if driver is not None:
            driver.quit()
        for a, _ in agents:
            a.stop()
        lab.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        run(args.out, Path(work))


if __name__ == "__main__":
    main()
