"""The presence routes of the session API: login, logout (also by ``navigator.sendBeacon``),
heartbeat. Thin views over ``presence.py`` through ``service.py``.

``actorId`` in a body is accepted (the reference client sends it) and ignored: the actor is the
authenticated user, and the answer names their real actorId. ``defaultAgents`` on login is
registered through the agents registry, under its rules (``agents.register_defaults``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from durable_sessions.sessions import errors, roles, service
from durable_sessions.sessions.api import SessionAPIView, SessionJSONParser, _valid
from durable_sessions.sessions.presence import MAX_DEVICE_ID
from durable_sessions.sessions.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
)

MAX_DEFAULT_AGENTS = 32


class TextJSONParser(SessionJSONParser):
    """JSON sent as ``text/plain``: what ``navigator.sendBeacon`` sends for a string body (the
    same checks as every JSON body of the API)."""

    media_type = "text/plain"


def _device_field(**extra: Any) -> StrictCharField:
    return StrictCharField(max_length=MAX_DEVICE_ID, allow_blank=False, **extra)


class LoginIn(serializers.Serializer):
    """``POST .../login``."""

    actorId = StrictCharField(required=False, allow_blank=True, max_length=200)
    deviceId = _device_field()
    name = StrictCharField(required=False, allow_blank=True, max_length=200)
    defaultAgents = serializers.ListField(
        child=serializers.DictField(), required=False, max_length=MAX_DEFAULT_AGENTS
    )


class LogoutIn(serializers.Serializer):
    """``POST .../logout``: one device, or ``allDevices``."""

    actorId = StrictCharField(required=False, allow_blank=True, max_length=200)
    deviceId = _device_field(required=False)
    allDevices = StrictBooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """A deviceId, or allDevices: true."""
        if "deviceId" not in attrs and not attrs["allDevices"]:
            raise serializers.ValidationError("name a deviceId, or set allDevices to true")
        return attrs


class HeartbeatIn(serializers.Serializer):
    """``POST .../heartbeat``: this device is still there (``online`` or ``away``)."""

    deviceId = _device_field()
    status = StrictChoiceField(choices=["online", "away"], default="online")


class PresenceOut(serializers.Serializer):
    """The answer of login, logout and heartbeat."""

    success = serializers.BooleanField()
    actorId = serializers.CharField()
    deviceId = serializers.CharField(allow_null=True)
    status = serializers.CharField()
    defaultAgentsRefused = serializers.CharField(
        required=False, help_text="Login only: why the defaultAgents sent were not registered."
    )


class PresenceView(SessionAPIView):
    """Login and heartbeat of a device in a session."""

    def needed_action(self) -> str:
        """Viewers are present too: reading the session is enough."""
        return roles.READ

    @extend_schema(request=LoginIn, responses={200: PresenceOut})
    def login(self, request: Request, pk: str) -> Response:
        """Log a device of mine in: online, announced on the stream."""
        body = _valid(LoginIn, request.data)
        refused = None
        if body.get("defaultAgents"):
            # Registered first, under the registry's rules: a malformed spec refuses the login
            # (400) before anything is written; a role that may not register them (a viewer, a
            # member adding an agent) does not keep the device out: the answer says why.
            try:
                service.register_defaults(
                    user=request.user, session_id=pk, specs=body["defaultAgents"]
                )
            except errors.Forbidden as exc:
                refused = str(exc.detail)
        answer = service.presence_login(
            user=request.user, session_id=pk, device_id=body["deviceId"], name=body.get("name")
        )
        if refused is not None:
            answer["defaultAgentsRefused"] = refused
        return Response(answer)

    @extend_schema(request=HeartbeatIn, responses={200: PresenceOut})
    def heartbeat(self, request: Request, pk: str) -> Response:
        """This device of mine is still there; its presence expires ``PRESENCE_TTL`` later."""
        body = _valid(HeartbeatIn, request.data)
        return Response(
            service.presence_heartbeat(
                user=request.user, session_id=pk, device_id=body["deviceId"], status=body["status"]
            )
        )


class LogoutView(SessionAPIView):
    """Logout, also as ``text/plain`` (``navigator.sendBeacon`` when a page closes)."""

    def needed_action(self) -> str:
        """Viewers are present too: reading the session is enough."""
        return roles.READ

    parser_classes = [*SessionAPIView.parser_classes, TextJSONParser]

    @extend_schema(request=LogoutIn, responses={200: PresenceOut})
    def logout(self, request: Request, pk: str) -> Response:
        """Log a device of mine out (or all of them): offline, announced on the stream."""
        body = _valid(LogoutIn, request.data)
        return Response(
            service.presence_logout(
                user=request.user,
                session_id=pk,
                device_id=body.get("deviceId"),
                all_devices=body["allDevices"],
            )
        )
