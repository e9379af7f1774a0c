"""Browser sessions of the dashboard and the checks that keep other sites from acting through them.

Logging in with a token gives a session: a random id in an HttpOnly, SameSite=Strict cookie (Secure when
served over TLS), kept in memory only (a restart logs everyone out) and tied to the token, which is looked
up again on every request, so revoking the token ends its sessions.  A change (unblock, log out) made with
the cookie needs all three: the cookie (which SameSite=Strict keeps off cross-site requests), the session's
CSRF token in the form or the ``X-CSRF-Token`` header, and an ``Origin`` (or ``Sec-Fetch-Site``) that is
this site when the browser sends one.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

COOKIE = "iotguard_session"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000  # the oldest go first: logins need a valid token, but memory stays bounded anyway


@dataclass
class Session:
    id: str
    token_id: str
    csrf: str
    expires: float
    flash: str | None = None  # one message for the next page (the result of an action)


class Sessions:
    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, token_id: str) -> Session:
        session = Session(secrets.token_urlsafe(32), token_id, secrets.token_urlsafe(32), time.time() + self.ttl_s)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires <= time.time():
                del self._sessions[session_id]
                return None
            return session

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


def cookie_value(header: str | None) -> str | None:
    """The session id from a Cookie header, if any."""
    if not header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def set_cookie(session: Session, secure: bool, ttl_s: float) -> str:
    return f"{COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(ttl_s)}" + ("; Secure" if secure else "")


def clear_cookie(secure: bool) -> str:
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" + ("; Secure" if secure else "")


def _netloc(scheme: str, host: str) -> str:
    """host[:port] in lower case with the scheme's default port left out."""
    host = host.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    return host[: -len(default)] if default and host.endswith(default) else host


def same_origin(origin: str | None, fetch_site: str | None, host: str | None, tls: bool) -> bool:
    """False when the browser says the request comes from another site.  Browsers send Origin on every POST
    (and Sec-Fetch-Site); a client that sends neither is no browser acting for someone else."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    if origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and _netloc(parts.scheme, parts.netloc) == _netloc("https" if tls else "http", host)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), presented.encode())  # type: ignore[union-attr]
