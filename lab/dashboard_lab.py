"""The controller's web server in the lab: a controller service on a real broker with its dashboard, tokens
of both roles, and a small HTTP client that never follows redirects (the tests look at them).

Used by the dashboard tests and by ``python -m lab.dashboard_screenshot``.
"""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from controller.http_api import Backend, DashboardServer, HttpSettings
from controller.metrics import ProcessView
from controller.service import ControllerService
from controller.store import Store
from controller.tokens import Tokens
from lab.mqtt_helpers import make_controller


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; Set-Cookie is the last one sent
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebClient:
    host: str
    port: int
    cookie: str | None = None  # the session cookie once logged in
    csrf: str | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, token: str | None = None, form: dict[str, str] | None = None,
                body: Any = None, headers: dict[str, str] | None = None, cookie: bool = True) -> Response:  # fmt: skip
        sent = dict(headers or {})
        data = None
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if cookie and self.cookie:
            sent["Cookie"] = self.cookie
        if form is not None:
            data = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=sent)
            reply = conn.getresponse()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            conn.close()

    def get(self, path: str, token: str | None = None, **kw: Any) -> Response:
        return self.request("GET", path, token, **kw)

    def login(self, token: str) -> Response:
        """Log in as a browser would (same origin); keeps the cookie and the page's CSRF token."""
        done = self.request("POST", "/login", form={"token": token}, headers={"Origin": self.origin}, cookie=False)
        if done.status == 303:
            self.cookie = done.headers["set-cookie"].split(";")[0]
            page = self.get("/")
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            self.csrf = found.group(1) if found else None
        return done


@dataclass
class DashboardLab:
    """A controller and its dashboard on ``broker``; ``admin`` and ``viewer`` are token secrets."""

    controller: ControllerService
    server: DashboardServer
    admin: str
    viewer: str
    tokens: Tokens
    clients: list[WebClient] = field(default_factory=list)

    @classmethod
    def start(cls, broker_host: str, broker_port: int, tmp_path: Path, key: Path, refresh_s: int = 10,
              **policy: Any) -> DashboardLab:  # fmt: skip
        controller = make_controller(broker_host, broker_port, tmp_path, key, **policy)
        stats = controller.stats
        process = ProcessView(rejected=lambda: dict(stats.rejected), duplicates=lambda: stats.alerts_duplicate,
                              connected=controller.ready.is_set)  # fmt: skip
        backend = Backend(controller.config.db, key, controller.config.broker, controller.config.prefix, process)
        server = DashboardServer(HttpSettings("127.0.0.1", 0, refresh_s=refresh_s), backend)
        tokens = Tokens(Store(controller.config.db))
        _, admin = tokens.create("admin", "lab admin")
        _, viewer = tokens.create("viewer", "lab viewer")
        controller.start()
        server.start()
        return cls(controller, server, admin, viewer, tokens)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> WebClient:
        host, port = self.server.address
        c = WebClient(host, port)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        self.server.stop()
        self.controller.stop()
        self.tokens.store.close()


# --- a real browser --------------------------------------------------------------------

CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's chromium-driver; selenium must not fetch one


def chromium_binary() -> str | None:
    """Debian's chromium with its driver, or None when either is missing."""
    import shutil

    binary = shutil.which("chromium")
    return binary if binary and CHROMEDRIVER.exists() else None


def headless_chromium(width: int = 1280, height: int = 900) -> Any:
    """A selenium driver of a headless chromium from the system packages: the driver's path is given, so
    selenium-manager never runs (it would try to download one)."""
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # belt and braces: selenium-manager, if it ever runs, stays offline
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--mute-audio", f"--window-size={width},{height}"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium's sandbox refuses to run as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
