"""Callback and claim tokens (durable_sessions/streams/subscriptions/tokens.py)."""

from __future__ import annotations

import base64
import json
import re

import pytest
from django.core import signing as django_signing
from django.test import override_settings

from durable_sessions.streams.subscriptions import tokens
from durable_sessions.streams.subscriptions.errors import TokenExpired, TokenInvalid

NOW = 1_800_000_000.0
BEARER = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")  # RFC 6750's b64token


def payload_of(token: str) -> list:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_a_token_gives_back_its_generation_and_wake():
    token = tokens.issue("sub-1", 7, "w_abc123", 30, now=NOW)
    assert tokens.verify(token, "sub-1", now=NOW) == (7, "w_abc123")
    assert BEARER.match(token) and len(token) < 130
    # Readable, and nothing in it is secret: what the wake's delivery carries anyway.
    assert payload_of(token) == [7, "w_abc123", int((NOW + 30) * 1000)]
    assert "tests" not in token  # SECRET_KEY


def test_it_expires_after_its_ttl():
    token = tokens.issue("sub-1", 7, "w_1", 30, now=NOW)
    assert tokens.verify(token, "sub-1", now=NOW + 29.999) == (7, "w_1")
    with pytest.raises(TokenExpired):
        tokens.verify(token, "sub-1", now=NOW + 30)
    short = tokens.issue("sub-1", 7, "w_1", 1.5, now=NOW)
    assert tokens.verify(short, "sub-1", now=NOW + 1.499) == (7, "w_1")
    with pytest.raises(TokenExpired):
        tokens.verify(short, "sub-1", now=NOW + 1.5)


def test_another_subscriptions_token_is_refused():
    token = tokens.issue("sub-a", 3, "w_1", 30, now=NOW)
    # Same generation, same wake id: only the subscription differs.
    for other in ["sub-b", "sub-a ", "Sub-a", "sub-", "", "sub-a.x"]:
        with pytest.raises(TokenInvalid):
            tokens.verify(token, other, now=NOW)
    assert tokens.verify(token, "sub-a", now=NOW) == (3, "w_1")


def test_a_tampered_token_is_refused():
    token = tokens.issue("sub-1", 7, "w_1", 30, now=NOW)
    payload, mac = token.split(".")
    forged = base64.urlsafe_b64encode(b'[8,"w_1",9999999999999]').rstrip(b"=").decode()
    flipped = mac[:5] + ("A" if mac[5] != "A" else "B") + mac[6:]
    for bad in [f"{forged}.{mac}", f"{payload}.{flipped}", f"{payload}x.{mac}"]:
        with pytest.raises(TokenInvalid):
            tokens.verify(bad, "sub-1", now=NOW)


def test_a_forged_token_is_invalid_even_when_expired():
    # Expiry is only told to holders of a genuine token.
    expired = tokens.issue("sub-1", 7, "w_1", 30, now=NOW - 3600)
    with pytest.raises(TokenExpired):
        tokens.verify(expired, "sub-1", now=NOW)
    with pytest.raises(TokenInvalid):
        tokens.verify(expired, "sub-2", now=NOW)
    with override_settings(SECRET_KEY="another"), pytest.raises(TokenInvalid):
        tokens.verify(expired, "sub-1", now=NOW)


def test_malformed_tokens_are_invalid():
    token = tokens.issue("sub-1", 7, "w_1", 30, now=NOW)
    for bad in [
        "",
        "x",
        ".",
        token.replace(".", ""),
        token + ".x",
        token + "\n",
        " " + token,
        token.replace(".", ":"),
        "é" + token,
        "a" * 5000 + "." + token.split(".")[1],
        None,
        b"bytes",
        7,
    ]:
        with pytest.raises(TokenInvalid):
            tokens.verify(bad, "sub-1", now=NOW)


def test_a_genuine_mac_over_something_else_is_invalid():
    """What issue() never writes is refused, even with a valid MAC (a bug or an old format)."""
    secret = "tests"
    for document in [b"{}", b"[7,1,2]", b'[true,"w",9]', b'[7,"w"]', b"not json", b"\xff"]:
        payload = base64.urlsafe_b64encode(document).rstrip(b"=").decode()
        token = f"{payload}.{tokens._mac(payload, 'sub-1', secret)}"
        with pytest.raises(TokenInvalid):
            tokens.verify(token, "sub-1", now=NOW)


def test_the_key_is_its_own():
    """Other signatures made with SECRET_KEY (Django's signing, the same key) are no tokens."""
    value = django_signing.Signer(sep=".").sign_object([7, "w_1", 9_999_999_999_999])
    with pytest.raises(TokenInvalid):
        tokens.verify(value, "sub-1", now=NOW)


def test_secret_key_rotation_keeps_tokens_in_flight():
    token = tokens.issue("sub-1", 7, "w_1", 30, now=NOW)
    with override_settings(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["tests"]):
        assert tokens.verify(token, "sub-1", now=NOW) == (7, "w_1")
        fresh = tokens.issue("sub-1", 8, "w_2", 30, now=NOW)
    with pytest.raises(TokenInvalid):
        tokens.verify(fresh, "sub-1", now=NOW)  # made with a key this process does not have
