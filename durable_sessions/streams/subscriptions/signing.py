"""Ed25519 signatures on webhook deliveries, their keys, and the JWK Set that publishes them.

A delivery carries ``Webhook-Signature: t=<unix seconds>,kid=<key id>,ed25519=<signature>``:
the signature is over the bytes ``<t>.<body>``, in unpadded base64url (PROTOCOL.md 7.1). The
keys live in the streams database (``SigningKey``), so every process signs with the same key
and a restart keeps it. ``kid`` is ``"ds_"`` and the RFC 7638 thumbprint of the public key:
derived from the key, it is the same wherever and whenever it is computed.

One key is active at a time. ``active_key()`` makes the first one on first use and
``rotate()`` replaces it; both take a lock in the database first (a table lock on Postgres,
the write lock on SQLite), so processes racing to do either end with one active key, never
two. A retired key loses its private half and stays in ``jwks()`` for the replay window
(``WEBHOOK_REPLAY_WINDOW``) plus ``RETIRED_KEY_MARGIN``: every delivery it signed is still
verifiable for as long as a receiver would accept it.

``verify()`` is the receiver's side, for Python receivers and for our tests. It and
``kid_of()`` need no Django setup: the model is imported inside the functions that use it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from durable_sessions.conf import ds_settings

if TYPE_CHECKING:
    from durable_sessions.streams.subscriptions.models import SigningKey

# Seconds a retired key stays published beyond the replay window. It covers a delivery signed
# just after the rotation by a process that read the key just before it, a request still in
# flight (at most WEBHOOK_TIMEOUT), and a receiver whose clock runs behind ours.
RETIRED_KEY_MARGIN = 60.0
HEADER = re.compile(r"t=([0-9]{1,15}),kid=([^,]{1,256}),ed25519=([A-Za-z0-9_-]{1,200})")
TABLE = "durable_sessions_signing_key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64url: {text!r}") from exc


def kid_of(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: ``"ds_"`` + its RFC 7638 JWK thumbprint."""
    # RFC 7638: the required members, in lexicographic order, without whitespace.
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64(public_key)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    return "ds_" + _b64(hashlib.sha256(canonical).digest())


def public_jwk(key: SigningKey) -> dict[str, str]:
    """The public half of ``key`` as a JWK (what ``jwks()`` lists)."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": key.kid,
        "use": "sig",
        "alg": "EdDSA",
        "x": _b64(bytes(key.public_key)),
    }


def _keys(alias: str) -> Any:
    from durable_sessions.streams.subscriptions.models import SigningKey

    return SigningKey.objects.using(alias)


def _newest_active(alias: str) -> SigningKey | None:
    return _keys(alias).filter(retired_at__isnull=True).order_by("-created_at", "-kid").first()


@contextmanager
def _key_lock(alias: str) -> Iterator[None]:
    """A transaction holding a lock that only key creation and rotation take, so that they run
    one at a time across threads and processes; readers are not held up on Postgres."""
    from django.db import connections, transaction

    with transaction.atomic(using=alias):
        connection = connections[alias]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # Conflicts with itself, not with the plain reads of sign() and jwks().
                cursor.execute(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
            else:
                # SQLite: a write, even one that changes no row, takes the database's write lock
                # (in a deferred transaction too), and the busy timeout waits for it.
                cursor.execute(f"UPDATE {TABLE} SET kid = kid WHERE 1 = 0")
        yield


def _create(alias: str, now: float) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _keys(alias).create(
        kid=kid_of(public),
        private_key=private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        public_key=public,
        created_at=now,
    )


def active_key() -> SigningKey:
    """The key that signs now: the newest key not retired, made (and stored) on first use."""
    alias = ds_settings.DATABASE_ALIAS
    key = _newest_active(alias)
    if key is not None:
        return key
    with _key_lock(alias):
        # Another process may have made it while this one waited for the lock.
        key = _newest_active(alias)
        if key is None:
            key = _create(alias, time.time())
    return key


def rotate() -> SigningKey:
    """Make a new active key and retire the current one; returns the new key.

    The retired key's private half is erased (nothing signs with it again); its public half
    stays in ``jwks()`` while deliveries it signed may still be accepted.
    """
    alias = ds_settings.DATABASE_ALIAS
    with _key_lock(alias):
        now = time.time()
        _keys(alias).filter(retired_at__isnull=True).update(retired_at=now, private_key=b"")
        return _create(alias, now)


def sign(body: bytes, *, now: float | None = None) -> str:
    """The ``Webhook-Signature`` header value for a delivery of ``body`` (its exact bytes).

    Sign each attempt of a delivery anew, just before sending it: the timestamp says when the
    attempt was made, and receivers refuse old ones.
    """
    key = active_key()
    timestamp = int(time.time() if now is None else now)
    private = Ed25519PrivateKey.from_private_bytes(bytes(key.private_key))
    signature = private.sign(b"%d." % timestamp + bytes(body))
    return f"t={timestamp},kid={key.kid},ed25519={_b64(signature)}"


def jwks(*, now: float | None = None) -> dict[str, list[dict[str, str]]]:
    """The JWK Set of ``GET .../__ds/jwks.json``: the active key first, then the retired keys
    that signed deliveries a receiver may still accept, newest first."""
    active_key()  # never publish an empty set: the first delivery's key is there already
    now = time.time() if now is None else now
    horizon = now - (ds_settings.WEBHOOK_REPLAY_WINDOW + RETIRED_KEY_MARGIN)
    keys = [
        key
        for key in _keys(ds_settings.DATABASE_ALIAS).order_by("-created_at", "-kid")
        if key.retired_at is None or key.retired_at > horizon
    ]
    keys.sort(key=lambda key: key.retired_at is not None)  # stable: newest first in each part
    return {"keys": [public_jwk(key) for key in keys]}


def _public_key(keys: Any, kid: str) -> Ed25519PublicKey | None:
    """The Ed25519 key named ``kid`` in the JWK Set ``keys``, or None."""
    found = keys.get("keys") if isinstance(keys, dict) else None
    for jwk in found if isinstance(found, list) else []:
        if not isinstance(jwk, dict) or jwk.get("kid") != kid:
            continue
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
            continue
        try:
            raw = _unb64(jwk["x"]) if isinstance(jwk.get("x"), str) else b""
            return Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            return None
    return None


def verify(
    body: bytes | str,
    header: str | None,
    jwks: Any,
    *,
    now: float | None = None,
    window: float = 300.0,
) -> bool:
    """Whether ``header`` (a ``Webhook-Signature`` value) is a valid signature of ``body``.

    What a receiver should do: take the raw body bytes as received (before any JSON parsing),
    the header, and the server's JWK Set (from ``jwks_url``, refetched when ``kid`` is not in
    the copy at hand); refuse a timestamp more than ``window`` seconds away from ``now``; pick
    the key by the header's ``kid``; check the signature over ``<t>.<body>``. Any malformed
    part makes it False, never an exception. Check ``subscription_id`` in the body too when one
    endpoint serves several subscriptions or servers (PROTOCOL.md 12.10).
    """
    match = HEADER.fullmatch(header) if isinstance(header, str) else None
    if match is None:
        return False
    timestamp, kid, signature = match.groups()
    if abs((time.time() if now is None else now) - int(timestamp)) > window:
        return False
    key = _public_key(jwks, kid)
    try:
        raw_signature = _unb64(signature)
    except ValueError:
        return False
    if key is None or len(raw_signature) != 64:
        return False
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    try:
        key.verify(raw_signature, timestamp.encode("ascii") + b"." + data)
    except InvalidSignature:
        return False
    return True
