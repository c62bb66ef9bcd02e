"""API keys: stored only as hashes, checked in constant time, two roles (client and admin).

Keys are 256-bit random tokens (:func:`new_key`), so an unsalted SHA-256 is the right hash
(as for GitHub or Stripe tokens): nothing to brute-force, and checking costs microseconds per
request where a password KDF would cost milliseconds. A request sends its key as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key: 401; an unknown key, or a client
key on an admin endpoint: 403. Admin keys may call every endpoint. Keys in the optional key file
may expire (``expires_at``); the file is re-read on ``SIGHUP`` (:meth:`KeyChecker.reload`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum

from banditroute.service.config import KEY_HASH_PREFIX, load_key_file


class Role(Enum):
    CLIENT = "client"
    ADMIN = "admin"


class Unauthorized(Exception):
    """No key was sent (HTTP 401)."""


class Forbidden(Exception):
    """The key is unknown, or lacks the role the endpoint needs (HTTP 403)."""


def new_key() -> str:
    """A fresh random API key (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of the key: what the config stores."""
    return KEY_HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyChecker:
    """Resolves the key of a request to a :class:`Role`.

    Keys come from the config's hash lists and, optionally, a key file (:class:`KeyEntry`: role and
    expiry per key) that :meth:`reload` re-reads — the server calls it on ``SIGHUP``. An expired
    key is refused like an unknown one (403).
    """

    def __init__(
        self,
        api_key_hashes: Iterable[str],
        admin_key_hashes: Iterable[str],
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._fixed = [(h, Role.CLIENT, None) for h in api_key_hashes]
        self._fixed += [(h, Role.ADMIN, None) for h in admin_key_hashes]
        self.key_file = key_file
        self._hashes: list[tuple[str, Role, datetime | None]] = []
        self.reload()

    def reload(self) -> int:
        """Re-read the key file (a no-op without one); returns the number of keys now accepted.

        An unreadable or invalid file raises :class:`InputError` and leaves the current keys in place.
        """
        entries = [] if self.key_file is None else load_key_file(self.key_file)
        self._hashes = self._fixed + [(e.hash, Role(e.role), e.expires_at) for e in entries]
        return len(self._hashes)

    @staticmethod
    def key_from_headers(headers: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        key = headers.get("x-api-key")
        return key.strip() if key and key.strip() else None

    def role(self, key: str | None) -> Role:
        """The key's role; raises :class:`Unauthorized` / :class:`Forbidden`."""
        if key is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = hash_key(key)
        now = datetime.now(UTC)
        found = None
        for h, role, expires_at in self._hashes:  # compare with every hash, in constant time each
            if hmac.compare_digest(h, digest) and (expires_at is None or now < expires_at):
                found = role
        if found is None:
            raise Forbidden("invalid API key")
        return found

    def require(self, headers: Mapping[str, str], role: Role) -> Role:
        got = self.role(self.key_from_headers(headers))
        if role is Role.ADMIN and got is not Role.ADMIN:
            raise Forbidden("this endpoint needs the admin key")
        return got
