"""The controller's web server: the dashboard, its JSON API and /metrics, beside the MQTT loop.

``controller run --http HOST:PORT`` starts it (standard library only: ThreadingHTTPServer in a thread).

    GET  /                  the fleet page (the login page when not logged in)
    GET  /login, POST /login, POST /logout
    POST /unblock           form of the page: admin, CSRF token, same origin
    GET  /api/devices | /api/alerts | /api/blocks | /api/rulesets | /api/models
    POST /api/unblock       {"fleet": ..., "source": ...}: admin
    GET  /metrics           Prometheus text format

Every route but the login page and the static files needs a token: ``Authorization: Bearer <token>``
(API clients, Prometheus) or the session cookie that logging in with a token sets (the page).  Without
one the API answers 401 and the page sends the browser to the login page; a viewer token may read, an
admin token may also unblock.  Unblocking runs ``FleetRules.unblock`` on a broker session of its own,
exactly as ``controller unblock`` does (``controller.oneshot.fleet_rules``): the new signed rule set is
recorded only once the broker took it.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.wire import NAME_RE, load_private_key
from controller import dashboard, fleet_view
from controller.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from controller.markup import el
from controller.metrics import Metrics, ProcessView
from controller.oneshot import BrokerUnreachable, fleet_rules
from controller.service import BrokerSettings
from controller.store import Store
from controller.tokens import Token, Tokens
from controller.web_auth import (
    SESSION_TTL_S,
    Session,
    Sessions,
    clear_cookie,
    cookie_value,
    csrf_ok,
    same_origin,
    set_cookie,
)

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    # Nothing but our own stylesheet and script; the chart is inline SVG, which needs no source.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it browsers send "Origin: null" on form posts, and the origin check needs the origin.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: Path | None = None  # both given: HTTPS, and the session cookie is Secure
    tls_key: Path | None = None
    refresh_s: int = 10  # the page refreshes its live parts this often (0: never)
    session_ttl_s: float = SESSION_TTL_S


@dataclass
class Backend:
    """What the web server needs of the controller it runs beside."""

    db: Path | str  # an SQLite file, or a PostgreSQL URL
    signing_key: Path
    broker: BrokerSettings
    prefix: str
    process: ProcessView | None = None


@dataclass
class Auth:
    token: Token
    session: Session | None  # None: a Bearer token


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class DashboardServer:
    def __init__(self, settings: HttpSettings, backend: Backend) -> None:
        self.settings, self.backend = settings, backend
        self.store = Store(backend.db)  # a connection of its own: page reads never wait for the ingest worker
        self.tokens = Tokens(self.store)
        self.sessions = Sessions(settings.session_ttl_s)
        self.metrics = Metrics(self.store, backend.process)
        self.key = load_private_key(backend.signing_key)
        self.tls = settings.tls_cert is not None
        handler = type("Handler", (Handler,), {"app": self})
        self.httpd = ThreadingHTTPServer((settings.host, settings.port), handler)
        self.httpd.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            # The handshake happens in the request's thread, so a slow client cannot hold up accept().
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{'https' if self.tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"

    def start(self) -> DashboardServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="controller-http", daemon=True)
        self._thread.start()
        log.info("dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self.store.close()

    # --- the one action --------------------------------------------------------

    def unblock(self, fleet: str, source: str, who: Token) -> dict[str, Any]:
        """What ``controller unblock`` does, on a broker session of its own; raises HttpError."""
        if not NAME_RE.match(fleet or ""):
            raise HttpError(HTTPStatus.BAD_REQUEST, "fleet: not a fleet name")
        try:
            with fleet_rules(lambda: self.store, self.key, self.backend.prefix, self.backend.broker,
                             f"iotguard-dashboard-{time.time_ns()}") as rules:  # fmt: skip
                ruleset = rules.unblock(fleet, source)
        except ValueError as exc:  # not an address or network
            raise HttpError(HTTPStatus.BAD_REQUEST, f"source: {exc}") from None
        except BrokerUnreachable as exc:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}; nothing changed") from None
        if ruleset is None:
            raise HttpError(HTTPStatus.NOT_FOUND, f"{source} is not blocked in fleet {fleet}")
        log.info("dashboard: token %s (%s) unblocked %s in fleet %s: rule set v%d", who.id, who.name, source, fleet,
                 ruleset.version)  # fmt: skip
        return {"fleet": fleet, "source": source, "version": ruleset.version, "rules": len(ruleset.rules)}


class Handler(BaseHTTPRequestHandler):
    app: DashboardServer
    server_version = "iotguard-controller"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    # --- plumbing ----------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class names it so)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        route = ROUTES.get((method, url.path))
        try:
            if route is None:
                if url.path.startswith("/static/") and method == "GET":
                    return self._static(url.path.removeprefix("/static/"))
                raise HttpError(HTTPStatus.NOT_FOUND if method == "GET" else HTTPStatus.METHOD_NOT_ALLOWED, "no such page")
            route(self)
        except HttpError as exc:
            self._error(exc.status, exc.message)
        except Exception:
            log.exception("dashboard: %s %s failed", method, url.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the controller's log)")

    @property
    def api(self) -> bool:
        path = urlsplit(self.path).path
        return path.startswith("/api/") or path == "/metrics"

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, doc: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(doc, indent=1).encode(), "application/json")

    def _html(self, body: bytes, status: HTTPStatus = HTTPStatus.OK, headers: dict[str, str] | None = None) -> None:
        self._send(status, body, "text/html; charset=utf-8", headers)

    def _redirect(self, where: str, headers: dict[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": where, **(headers or {})})

    def _error(self, status: HTTPStatus, message: str) -> None:
        if self.api:
            extra = {"WWW-Authenticate": 'Bearer realm="iotguard"'} if status == HTTPStatus.UNAUTHORIZED else None
            self._send(status, json.dumps({"error": message}).encode(), "application/json", extra)
        else:
            title = f"{status.value} {status.phrase}"
            self._html(dashboard.document(title, el("main", el("h1", title), el("p", message),
                                                    el("p", el("a", "Back to the dashboard", href="/")), class_="narrow")),
                       status)  # fmt: skip

    def _static(self, name: str) -> None:
        if name not in STATIC:
            raise HttpError(HTTPStatus.NOT_FOUND, "no such file")
        body = resources.files("controller").joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, body, STATIC[name], {"Cache-Control": "no-cache"})

    def _body(self) -> dict[str, str]:
        """A form or JSON object body, as text fields."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        data = self.rfile.read(length)
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() == "application/json":
            try:
                doc = json.loads(data or b"{}")
            except ValueError:
                raise HttpError(HTTPStatus.BAD_REQUEST, "body is not JSON") from None
            if not isinstance(doc, dict):
                raise HttpError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
        return {k: v[0] for k, v in parse_qs(data.decode("utf-8", "replace"), keep_blank_values=True).items()}

    # --- who is asking --------------------------------------------------------------

    def _auth(self) -> Auth | None:
        header = self.headers.get("Authorization")
        if header is not None:  # a failed Authorization never falls back to the cookie
            scheme, _, credential = header.partition(" ")
            token = self.app.tokens.verify(credential.strip()) if scheme.lower() == "bearer" else None
            return Auth(token, None) if token else None
        session = self.app.sessions.get(cookie_value(self.headers.get("Cookie")))
        if session is None:
            return None
        token = self.app.tokens.still_active(session.token_id)
        if token is None:  # revoked since the login
            self.app.sessions.drop(session.id)
            return None
        return Auth(token, session)

    def _require(self, role: str = "viewer") -> Auth:
        auth = self._auth()
        if auth is None:
            raise HttpError(HTTPStatus.UNAUTHORIZED, "a token is needed: Authorization: Bearer <token>")
        if not auth.token.allows(role):
            raise HttpError(HTTPStatus.FORBIDDEN, f"this needs an {role} token")
        return auth

    def _same_origin(self) -> None:
        h = self.headers
        if not same_origin(h.get("Origin"), h.get("Sec-Fetch-Site"), h.get("Host"), self.app.tls):
            raise HttpError(HTTPStatus.FORBIDDEN, "cross-site request refused")

    def _change(self, role: str, fields: dict[str, str]) -> Auth:
        """A request that changes something: same origin, the role, and with a session its CSRF token."""
        self._same_origin()
        auth = self._require(role)
        if auth.session is not None and not csrf_ok(auth.session, fields.get("csrf") or self.headers.get("X-CSRF-Token")):
            raise HttpError(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token (reload the page)")
        return auth

    # --- the page ----------------------------------------------------------------------

    def page(self) -> None:
        auth = self._auth()
        if auth is None or auth.session is None:
            return self._redirect("/login")
        now = time.time()
        try:
            query = fleet_view.AlertQuery.from_params(self.query, now, default_limit=dashboard.PAGE_ALERTS)
            problem = None
        except fleet_view.QueryError as exc:
            query, problem = fleet_view.AlertQuery(limit=dashboard.PAGE_ALERTS), str(exc)
        store = self.app.store
        view = fleet_view.summary(store, now)
        flash, auth.session.flash = auth.session.flash, None
        viewer = dashboard.Viewer(auth.token.name, auth.token.role, auth.session.csrf)
        self._html(dashboard.fleet_page(viewer, view, query, fleet_view.alerts(store, query),
                                        fleet_view.chart(store, query, now), problem or flash,
                                        self.app.settings.refresh_s, self.query))  # fmt: skip

    def login_form(self) -> None:
        if (auth := self._auth()) is not None and auth.session is not None:
            return self._redirect("/")
        self._html(dashboard.login_page())

    def login(self) -> None:
        self._same_origin()
        token = self.app.tokens.verify(self._body().get("token", "").strip())
        if token is None:
            log.warning("dashboard: failed login from %s", self.client_address[0])
            return self._html(dashboard.login_page("That token is not valid, or it was revoked."), HTTPStatus.UNAUTHORIZED)
        session = self.app.sessions.create(token.id)
        cookie = set_cookie(session, self.app.tls, self.app.settings.session_ttl_s)
        self._redirect("/", {"Set-Cookie": cookie})

    def logout(self) -> None:
        auth = self._change("viewer", self._body())
        if auth.session is not None:
            self.app.sessions.drop(auth.session.id)
        self._redirect("/login", {"Set-Cookie": clear_cookie(self.app.tls)})

    def unblock_form(self) -> None:
        fields = self._body()
        auth = self._change("admin", fields)
        if auth.session is None:  # a Bearer client: the API's answer
            return self._json(self.app.unblock(fields.get("fleet", ""), fields.get("source", ""), auth.token))
        try:
            done = self.app.unblock(fields.get("fleet", ""), fields.get("source", ""), auth.token)
            auth.session.flash = f"Unblocked {done['source']} in fleet {done['fleet']}: rule set v{done['version']} published."
        except HttpError as exc:  # shown on the page it came from
            auth.session.flash = f"Not unblocked: {exc.message}"
        self._redirect("/#blocks")

    # --- the API -----------------------------------------------------------------------

    def api_devices(self) -> None:
        self._require()
        self._json({"devices": fleet_view.devices(self.app.store, time.time())})

    def api_alerts(self) -> None:
        self._require()
        now = time.time()
        try:
            q = fleet_view.AlertQuery.from_params(self.query, now)
        except fleet_view.QueryError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        self._json({"query": {"fleet": q.fleet, "device": q.device, "class": q.cls, "range": q.range, "since": q.since,
                              "until": q.until, "limit": q.limit},
                    "alerts": fleet_view.alerts(self.app.store, q), "chart": fleet_view.chart(self.app.store, q, now)})  # fmt: skip

    def api_blocks(self) -> None:
        self._require()
        self._json({"blocks": fleet_view.blocks(self.app.store, time.time())})

    def api_rulesets(self) -> None:
        self._require()
        self._json({"rulesets": fleet_view.rulesets(self.app.store, limit=int_param(self.query, "limit", 20, 500))})

    def api_models(self) -> None:
        self._require()
        self._json({"models": fleet_view.models(self.app.store, limit=int_param(self.query, "limit", 20, 500))})

    def api_unblock(self) -> None:
        fields = self._body()
        auth = self._change("admin", fields)
        self._json(self.app.unblock(fields.get("fleet", ""), fields.get("source", ""), auth.token))

    def metrics(self) -> None:
        self._require()
        self._send(HTTPStatus.OK, self.app.metrics.render().encode(), METRICS_CONTENT_TYPE)


def int_param(query: dict[str, str], name: str, default: int, top: int) -> int:
    try:
        value = int(query.get(name) or default)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer") from None
    if not 1 <= value <= top:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be within 1..{top}")
    return value


ROUTES = {
    ("GET", "/"): Handler.page,
    ("GET", "/login"): Handler.login_form,
    ("POST", "/login"): Handler.login,
    ("POST", "/logout"): Handler.logout,
    ("POST", "/unblock"): Handler.unblock_form,
    ("GET", "/api/devices"): Handler.api_devices,
    ("GET", "/api/alerts"): Handler.api_alerts,
    ("GET", "/api/blocks"): Handler.api_blocks,
    ("GET", "/api/rulesets"): Handler.api_rulesets,
    ("GET", "/api/models"): Handler.api_models,
    ("POST", "/api/unblock"): Handler.api_unblock,
    ("GET", "/metrics"): Handler.metrics,
}
