"""The session API's lifecycle routes: ``POST .../fork`` and ``POST .../reset`` (WIRE.md 6),
thin views over ``lifecycle.py`` (through the service)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from durable_sessions.sessions import service
from durable_sessions.sessions.api import SessionAPIView, _valid
from durable_sessions.sessions.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictUUIDField,
)


class ForkIn(serializers.Serializer):
    """``POST .../fork``: where to fork (a message, an offset of ours, or the whole session)
    and the new session's id (default: a new one)."""

    atMessageId = StrictCharField(required=False, allow_null=True, max_length=200)
    atOffset = StrictCharField(required=False, allow_null=True, max_length=100)
    newSessionId = StrictUUIDField(required=False, allow_null=True)


class ForkOut(serializers.Serializer):
    """The new session, and where to read its stream from."""

    sessionId = serializers.CharField()
    offset = serializers.CharField()


class ResetIn(serializers.Serializer):
    """``POST .../reset``: ``clearPresence`` leaves presence out of what is re-appended."""

    clearPresence = StrictBooleanField(required=False, default=False)


class ResetOut(serializers.Serializer):
    """The answer to a reset."""

    success = serializers.BooleanField()
    sessionId = serializers.CharField()
    message = serializers.CharField()


class LifecycleViewSet(SessionAPIView):
    """Fork a session, reset its stream."""

    @extend_schema(request=ForkIn, responses={201: ForkOut})
    def fork(self, request: Request, pk: str) -> Response:
        """Fork the session into a new one I own (members and owners; owners bring its
        agents along)."""
        body = _valid(ForkIn, request.data if request.data else {})
        new_id = body.get("newSessionId")
        fork = service.session_fork(
            user=request.user,
            session_id=pk,
            at_message_id=body.get("atMessageId"),
            at_offset=body.get("atOffset"),
            new_session_id=new_id,
        )
        return Response({"sessionId": str(fork.pk), "offset": "-1"}, status=status.HTTP_201_CREATED)

    @extend_schema(request=ResetIn, responses={200: ResetOut})
    def reset(self, request: Request, pk: str) -> Response:
        """Reset the session's stream (owners): the reset, then agents and online presence."""
        body = _valid(ResetIn, request.data if request.data else {})
        return Response(
            service.session_reset(
                user=request.user, session_id=pk, clear_presence=body["clearPresence"]
            )
        )
