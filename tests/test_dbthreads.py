"""Tests of durable_sessions/dbthreads.py: a thread of ours keeps its connection from call to
call (whatever ``CONN_MAX_AGE``), and closes one that a call left inside a transaction."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from durable_sessions import dbthreads
from durable_sessions.sessions.models import Session

pytestmark = pytest.mark.django_db(transaction=True)


def on_thread(fn):
    found = {}

    def run():
        try:
            found["value"] = fn()
        finally:
            dbthreads.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return found["value"]


def test_the_connection_is_kept_between_calls():
    def calls():
        Session.objects.count()
        dbthreads.tidy()
        first = connection.connection
        Session.objects.count()
        dbthreads.tidy()
        return first is not None, first is connection.connection

    assert on_thread(calls) == (True, True)


def test_a_connection_left_in_a_transaction_is_closed():
    def calls():
        connection.set_autocommit(False)  # (what a call that leaked its transaction leaves)
        Session.objects.count()
        dbthreads.tidy()
        return connection.connection is None

    assert on_thread(calls) is True
