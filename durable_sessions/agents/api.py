"""The runtime's usage through the session API: ``GET /v1/sessions/<id>/usage`` (members) and
``GET /v1/usage`` (what my messages started), from the job rows."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from durable_sessions.agents import jobs
from durable_sessions.sessions import service
from durable_sessions.sessions.api import SessionAPIView


class TotalsOut(serializers.Serializer):
    """Generations and tokens (``tokensIn``/``tokensOut``: the upstream's usage where it said,
    else counted)."""

    generations = serializers.IntegerField()
    tokensIn = serializers.IntegerField()
    tokensOut = serializers.IntegerField()
    failed = serializers.IntegerField()
    stopped = serializers.IntegerField()
    interrupted = serializers.IntegerField()


class SessionUsageOut(serializers.Serializer):
    """A session's usage: totals, and per agent."""

    totals = TotalsOut()
    agents = serializers.DictField(child=TotalsOut())


class UserUsageOut(serializers.Serializer):
    """The usage of the generations my messages started."""

    totals = TotalsOut()


class UsageViewSet(SessionAPIView):
    """Usage totals of the agent runtime."""

    @extend_schema(responses={200: SessionUsageOut})
    def session(self, request: Request, pk: str) -> Response:
        """The session's generations and tokens (members)."""
        access = service.session_get(user=request.user, session_id=pk)
        return Response(jobs.session_usage(access.session))

    @extend_schema(responses={200: UserUsageOut})
    def mine(self, request: Request) -> Response:
        """The generations my messages started, in every session."""
        return Response(jobs.user_usage(request.user))
