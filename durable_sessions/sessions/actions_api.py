"""The session's actions: ``POST .../stop``, ``.../tool-results``, ``.../approvals/<id>`` and
``.../regenerate`` (WIRE.md 6), thin views over ``service`` (``actions.py`` says what each
writes). Members, owners and staff; viewers and outsiders 403; archived sessions 409.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from durable_sessions.sessions import service
from durable_sessions.sessions.agents_api import SuccessOut
from durable_sessions.sessions.api import SessionAPIView, _valid
from durable_sessions.sessions.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictUUIDField,
)

# A messageId a client chooses (the reference client sends UUIDs): no ":" nor spaces.
MESSAGE_ID = RegexValidator(r"\A[A-Za-z0-9._~-]+\Z", "letters, digits and . _ ~ - only")


def _message_id(**kwargs: object) -> StrictCharField:
    return StrictCharField(max_length=200, validators=[MESSAGE_ID], **kwargs)  # type: ignore[arg-type]


class StopIn(serializers.Serializer):
    """``POST .../stop``: a generation's messageId, or null (or nothing) for all of them."""

    messageId = _message_id(required=False, allow_null=True)


class ToolResultIn(serializers.Serializer):
    """``POST .../tool-results``: the result of a client-side tool call."""

    toolCallId = StrictCharField(max_length=200)
    output = serializers.JSONField(allow_null=True)
    error = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=10_000)
    messageId = _message_id(required=False)
    txid = StrictUUIDField(required=False)


class ApprovalIn(serializers.Serializer):
    """``POST .../approvals/<approvalId>``: the answer."""

    approved = StrictBooleanField()
    txid = StrictUUIDField(required=False)


class RegenerateIn(serializers.Serializer):
    """``POST .../regenerate``. ``actorId`` and ``actorType`` are accepted and ignored."""

    fromMessageId = StrictCharField(max_length=200)
    content = StrictCharField(allow_blank=True, trim_whitespace=False)
    actorId = StrictCharField(required=False, allow_blank=True)
    actorType = StrictChoiceField(choices=["user", "agent"], required=False)


def _txid(body: dict) -> str | None:
    return str(body["txid"]) if body.get("txid") else None


class ActionsView(SessionAPIView):
    """Stop, tool results, regenerate."""

    @extend_schema(request=StopIn, responses={204: None})
    def stop(self, request: Request, pk: str) -> Response:
        """Stop one generation, or every active one."""
        body = _valid(StopIn, request.data if request.data else {})
        service.generation_stop(user=request.user, session_id=pk, message_id=body.get("messageId"))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=ToolResultIn, responses={204: None})
    def tool_results(self, request: Request, pk: str) -> Response:
        """Post the result of a tool call as a whole assistant message."""
        body = _valid(ToolResultIn, request.data)
        service.tool_result_post(
            user=request.user,
            session_id=pk,
            tool_call_id=body["toolCallId"],
            output=body["output"],
            error=body.get("error") or None,
            message_id=body.get("messageId"),
            txid=_txid(body),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=RegenerateIn, responses={200: SuccessOut})
    def regenerate(self, request: Request, pk: str) -> Response:
        """Ask the session's agent for a new reply to a message."""
        body = _valid(RegenerateIn, request.data)
        service.message_regenerate(
            user=request.user,
            session_id=pk,
            from_message_id=body["fromMessageId"],
            content=body["content"],
        )
        return Response({"success": True})


class ApprovalView(SessionAPIView):
    """The answer to an approval a tool call asked for."""

    @extend_schema(request=ApprovalIn, responses={204: None})
    def create(self, request: Request, pk: str, approval_id: str) -> Response:
        """Approve or refuse."""
        body = _valid(ApprovalIn, request.data)
        service.approval_respond(
            user=request.user,
            session_id=pk,
            approval_id=approval_id,
            approved=body["approved"],
            txid=_txid(body),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
