"""API keys: stored only as hashes, checked in constant time, two roles (client and admin).

Keys are 256-bit random tokens (:func:`new_key`), so an unsalted SHA-256 is the right hash
(as for GitHub or Stripe tokens): nothing to brute-force, and checking costs microseconds per
request where a password KDF would cost milliseconds. A request sends its key as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key: 401; an unknown key, or a client
key on an admin endpoint: 403. Admin keys may call every endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from enum import Enum

from banditroute.service.config import KEY_HASH_PREFIX


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
    """Resolves the key of a request to a :class:`Role`."""

    def __init__(self, api_key_hashes: Iterable[str], admin_key_hashes: Iterable[str]) -> None:
        self._hashes = [(h, Role.CLIENT) for h in api_key_hashes] + [(h, Role.ADMIN) for h in admin_key_hashes]

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
        found = None
        for h, role in self._hashes:  # compare with every hash, in constant time each
            if hmac.compare_digest(h, digest):
                found = role
        if found is None:
            raise Forbidden("invalid API key")
        return found

    def require(self, headers: Mapping[str, str], role: Role) -> Role:
        got = self.role(self.key_from_headers(headers))
        if role is Role.ADMIN and got is not Role.ADMIN:
            raise Forbidden("this endpoint needs the admin key")
        return got
