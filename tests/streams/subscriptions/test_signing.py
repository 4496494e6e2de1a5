"""Webhook signatures and their keys (durable_sessions/streams/subscriptions/signing.py)."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from durable_sessions.streams.db import Database
from durable_sessions.streams.subscriptions import signing
from durable_sessions.streams.subscriptions.models import SigningKey
from tests.servers import ROOT, database_env
from tests.waiting import wait_until

BODY = '{"subscription_id":"sub-1","wake_id":"w_1","generation":7,"note":"é ✓"}'.encode()
HEADER = re.compile(r"^t=(\d+),kid=(ds_[A-Za-z0-9_-]{43}),ed25519=([A-Za-z0-9_-]{86})$")


def test_kid_is_the_rfc_7638_thumbprint():
    # RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    x = signing._unb64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    assert signing.kid_of(x) == "ds_kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.django_db
def test_a_signature_verifies_against_the_jwks():
    header = signing.sign(BODY, now=1_700_000_000.9)
    match = HEADER.match(header)
    assert match, header
    assert match[1] == "1700000000"
    key = signing.active_key()
    assert match[2] == key.kid == signing.kid_of(bytes(key.public_key))
    assert signing.jwks() == {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": key.kid,
                "use": "sig",
                "alg": "EdDSA",
                "x": signing._b64(bytes(key.public_key)),
            }
        ]
    }
    assert signing.verify(BODY, header, signing.jwks(), now=1_700_000_000)
    assert signing.verify(BODY.decode(), header, signing.jwks(), now=1_700_000_000)


@pytest.mark.django_db
def test_anything_changed_fails():
    now = 1_700_000_000
    header = signing.sign(BODY, now=now)
    keys = signing.jwks()
    t, kid, signature = HEADER.match(header).groups()
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    other = Ed25519PrivateKey.generate().sign(f"{t}.".encode() + BODY)
    for body, bad in [
        (BODY + b" ", header),  # the body
        (BODY.replace(b"7", b"8"), header),
        (BODY, f"t={int(t) + 1},kid={kid},ed25519={signature}"),  # the timestamp
        (BODY, f"t=0{t},kid={kid},ed25519={signature}"),  # the same number, other bytes
        (BODY, f"t={t},kid=ds_unknown,ed25519={signature}"),  # the key
        (BODY, f"t={t},kid={kid},ed25519={flipped}"),  # the signature
        (BODY, f"t={t},kid={kid},ed25519={signing._b64(other)}"),  # another key's signature
        (BODY, f"t={t},kid={kid},ed25519={signature[:-2]}"),  # cut short
        (BODY, header + "\n"),
        (BODY, " " + header),
        (BODY, f"kid={kid},t={t},ed25519={signature}"),
        (BODY, f"t={t},kid={kid},ed25519={signature}=="),
        (BODY, f"t=١٢٣,kid={kid},ed25519={signature}"),  # not ASCII digits
        (BODY, ""),
        (BODY, None),
    ]:
        assert not signing.verify(body, bad, keys, now=now), (body, bad)
    assert signing.verify(BODY, header, keys, now=now)
    for broken in [{}, {"keys": "x"}, {"keys": [None, 3]}, [], None, {"keys": [{"kid": kid}]}]:
        assert not signing.verify(BODY, header, broken, now=now)
    wrong_x = {"keys": [{**keys["keys"][0], "x": "AAAA"}]}
    assert not signing.verify(BODY, header, wrong_x, now=now)


@pytest.mark.django_db
def test_the_replay_window():
    header = signing.sign(BODY, now=1_000_000)
    keys = signing.jwks()
    assert signing.verify(BODY, header, keys, now=1_000_300)
    assert signing.verify(BODY, header, keys, now=999_700)
    assert not signing.verify(BODY, header, keys, now=1_000_300.5)
    assert not signing.verify(BODY, header, keys, now=999_699)
    assert signing.verify(BODY, header, keys, now=1_000_500, window=600)


@pytest.mark.django_db(transaction=True)
def test_the_key_is_the_same_in_another_process():
    key = signing.active_key()
    script = (
        "import django, json; django.setup(); "
        "from durable_sessions.streams.subscriptions import signing; "
        "print(json.dumps([signing.active_key().kid, signing.jwks()]))"
    )
    env = {**database_env(), "DJANGO_SETTINGS_MODULE": "project.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    kid, keys = json.loads(done.stdout)
    assert kid == key.kid
    assert keys == signing.jwks()
    stored = SigningKey.objects.get()
    assert signing.kid_of(bytes(stored.public_key)) == stored.kid == key.kid
    # What that process would sign, this one verifies, and the other way round.
    assert signing.verify(BODY, signing.sign(BODY), keys)


@pytest.mark.django_db
def test_rotation_keeps_the_old_key_published_through_the_replay_window():
    old = signing.active_key()
    signed_before = signing.sign(BODY)
    new = signing.rotate()
    assert new.kid != old.kid
    assert signing.active_key().kid == new.kid
    assert HEADER.match(signing.sign(BODY))[2] == new.kid
    retired = SigningKey.objects.get(kid=old.kid)
    assert retired.retired_at is not None
    assert bytes(retired.private_key) == b""  # nothing can sign with it any more
    assert [jwk["kid"] for jwk in signing.jwks()["keys"]] == [new.kid, old.kid]
    assert signing.verify(BODY, signed_before, signing.jwks())

    published = 300 + signing.RETIRED_KEY_MARGIN
    kept = signing.jwks(now=retired.retired_at + published - 1)
    assert [jwk["kid"] for jwk in kept["keys"]] == [new.kid, old.kid]
    dropped = signing.jwks(now=retired.retired_at + published + 1)
    assert [jwk["kid"] for jwk in dropped["keys"]] == [new.kid]
    with override_settings(DURABLE_SESSIONS={"WEBHOOK_REPLAY_WINDOW": 30.0}):
        later = signing.jwks(now=retired.retired_at + 30 + signing.RETIRED_KEY_MARGIN + 1)
    assert [jwk["kid"] for jwk in later["keys"]] == [new.kid]


@pytest.mark.django_db
def test_the_rotate_command():
    old = signing.active_key()
    out = io.StringIO()
    call_command("rotate_webhook_key", stdout=out)
    new = signing.active_key()
    assert new.kid != old.kid
    assert f"New webhook signing key: {new.kid}" in out.getvalue()
    assert SigningKey.objects.filter(retired_at__isnull=True).count() == 1


def _lock_is_held() -> bool:
    """Whether another connection is refused the lock that key creation takes."""
    if connection.vendor == "postgresql":
        with Database().connect() as other:
            try:
                other.execute("BEGIN")
                other.execute(f"LOCK TABLE {signing.TABLE} IN SHARE ROW EXCLUSIVE MODE NOWAIT")
            except Exception as exc:  # psycopg.errors.LockNotAvailable
                return "lock" in str(exc)
            finally:
                other.execute("ROLLBACK")
        return False
    other = sqlite3.connect(str(connection.settings_dict["NAME"]), timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    finally:
        other.close()


def _in_key_lock(thread: threading.Thread) -> bool:
    """Whether ``thread`` is taking the key lock (its stack is inside ``_key_lock``)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code is signing._key_lock.__wrapped__.__code__:
            return True
        frame = frame.f_back
    return False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sqlite_mode", ["IMMEDIATE", "DEFERRED"])
def test_two_first_uses_at_once_make_one_key(monkeypatch, sqlite_mode):
    """The first caller is held while it makes the key, inside the lock; the second starts
    then, and must wait for the lock and take the key the first one made. On SQLite, with
    either transaction mode (a deferred BEGIN takes no lock: the lock must come from us)."""
    if connection.vendor == "sqlite":  # read when a connection opens: the threads' new ones
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "transaction_mode", sqlite_mode)
    real_generate = Ed25519PrivateKey.generate
    generating: list[str] = []
    first_in, second_in, release = threading.Event(), threading.Event(), threading.Event()

    def generate():
        generating.append(threading.current_thread().name)
        if len(generating) == 1:
            first_in.set()
            release.wait(30)
        else:
            second_in.set()
        return real_generate()

    monkeypatch.setattr(Ed25519PrivateKey, "generate", staticmethod(generate))
    kids: dict[str, str] = {}

    def use(name: str) -> None:
        try:
            kids[name] = signing.active_key().kid
        finally:
            connection.close()

    first = threading.Thread(target=use, args=("first",), name="first")
    second = threading.Thread(target=use, args=("second",), name="second")
    first.start()
    try:
        assert first_in.wait(10)
        assert _lock_is_held()
        second.start()
        wait_until(lambda: second_in.is_set() or _in_key_lock(second), what="the second caller")
    finally:
        release.set()
        first.join(30)
        if second.ident:
            second.join(30)
    assert generating == ["first"]
    assert kids["first"] == kids["second"]
    assert list(SigningKey.objects.values_list("kid", flat=True)) == [kids["first"]]


@pytest.mark.django_db(transaction=True)
def test_two_rotations_at_once_leave_one_active_key():
    signing.active_key()
    start = threading.Barrier(2)
    made: list[str] = []

    def rotate() -> None:
        try:
            start.wait(10)
            made.append(signing.rotate().kid)
        finally:
            connection.close()

    threads = [threading.Thread(target=rotate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    active = list(SigningKey.objects.filter(retired_at__isnull=True).values_list("kid", flat=True))
    assert len(made) == 2
    assert active == [signing.active_key().kid]
    assert active[0] in made


NODE_VERIFY = """
import { createPublicKey, verify } from "node:crypto";
import { readFileSync } from "node:fs";

// What the conformance suite does with a delivery (verifyWebhookSignature).
function check(rawBody, header, jwks) {
  const match = header.match(/^t=(\\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)$/);
  if (!match) return false;
  const [, timestamp, kid, signature] = match;
  const jwk = jwks.keys.find((candidate) => candidate.kid === kid);
  if (!jwk) return false;
  if (Math.abs(Math.floor(Date.now() / 1000) - Number(timestamp)) > 300) return false;
  const key = createPublicKey({ key: jwk, format: "jwk" });
  const signed = Buffer.from(`${timestamp}.${rawBody}`);
  return verify(null, signed, key, Buffer.from(signature, "base64url"));
}

const cases = JSON.parse(readFileSync(0, "utf8"));
console.log(JSON.stringify(cases.map(([body, header, jwks]) => check(body, header, jwks))));
"""


@pytest.mark.django_db
def test_node_accepts_our_signatures(tmp_path):
    script = tmp_path / "verify.mjs"
    script.write_text(NODE_VERIFY)
    body = BODY.decode()  # the suite reads the body as UTF-8 text, as a receiver's framework does
    old_header = signing.sign(BODY)
    signing.rotate()
    header = signing.sign(BODY)
    keys = signing.jwks()
    cases = [
        [body, header, keys],
        [body + " ", header, keys],
        [body, old_header, keys],  # the retired key, still published
        [body, old_header, {"keys": keys["keys"][:1]}],
    ]
    done = subprocess.run(
        ["node", str(script)], input=json.dumps(cases), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, False, True, False]
