"""Access tokens of the dashboard, its JSON API and /metrics: shown once, stored hashed, revocable.

A token is ``iotg_`` and 32 random bytes (``secrets``), printed once by ``controller token create``; the
database keeps its sha256 only.  A fast hash is enough here: a token is not a password a person chose, and
with 256 random bits no one can search for a preimage, so each request checks its token without the cost of
a password KDF.  Roles: ``viewer`` reads everything; ``admin`` also acts (unblock).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from controller.store import Store

log = logging.getLogger(__name__)

ROLES = ("viewer", "admin")
TOKEN_PREFIX = "iotg_"
TOUCH_EVERY_S = 60.0  # last_used is written at most this often per token: reads must not turn into writes
MAX_TOKEN_CHARS = 128  # anything longer is no token of ours; not hashed


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    role: str
    created_at: float
    last_used: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, role: str) -> bool:
        """admin may do what a viewer may."""
        return ROLES.index(self.role) >= ROLES.index(role)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Tokens:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self, role: str, name: str = "") -> tuple[Token, str]:
        """A new token and its secret (the only time the secret exists outside the caller)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(4)
        self.store.add_token(token_id, name or role, role, token_hash(secret), time.time())
        log.info("token %s (%s) created", token_id, role)
        return self.get(token_id), secret  # type: ignore[return-value]

    def get(self, token_id: str) -> Token | None:
        rows = self.store.token_rows(token_id=token_id)
        return Token(**rows[0]) if rows else None

    def list(self) -> list[Token]:
        return [Token(**r) for r in self.store.token_rows()]

    def revoke(self, token_id: str) -> bool:
        done = self.store.revoke_token(token_id, time.time())
        if done:
            log.info("token %s revoked", token_id)
        return done

    def verify(self, secret: str) -> Token | None:
        """The active token with this secret, or None."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_CHARS:
            return None
        rows = self.store.token_rows(sha256=token_hash(secret))
        token = Token(**rows[0]) if rows else None
        if token is None or not token.active:
            return None
        self._touch(token.id)
        return token

    def still_active(self, token_id: str) -> Token | None:
        """A session's token, looked up again: revoking a token ends its sessions at their next request."""
        token = self.get(token_id)
        if token is None or not token.active:
            return None
        self._touch(token.id)
        return token

    def _touch(self, token_id: str) -> None:
        now = time.time()
        with self._lock:
            if now - self._touched.get(token_id, 0.0) < TOUCH_EVERY_S:
                return
            self._touched[token_id] = now
        self.store.touch_token(token_id, now)
