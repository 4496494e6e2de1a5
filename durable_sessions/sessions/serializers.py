"""The bodies the session API takes and gives, validated strictly.

A JSON string is never taken for a number or a boolean, nor a number for a string: the
``Strict*`` fields refuse what REST framework's own fields would coerce. Unknown fields are
ignored (clients of the reference wire send some we do not use).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from durable_sessions.sessions import agent_specs
from durable_sessions.sessions.models import MESSAGE_ROLES, ROLES, TRIGGERS


class StrictCharField(serializers.CharField):
    """A string, and only a string."""

    def to_internal_value(self, data: Any) -> str:
        """Refuse anything that is not a JSON string."""
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID written as a string."""

    def to_internal_value(self, data: Any) -> Any:
        """Refuse anything that is not a JSON string holding a UUID."""
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false``, not ``"true"``, ``1`` or ``"yes"``."""

    def to_internal_value(self, data: Any) -> bool:
        """Refuse anything that is not a JSON boolean."""
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictChoiceField(serializers.ChoiceField):
    """One of the choices, as a string."""

    def to_internal_value(self, data: Any) -> Any:
        """Refuse anything that is not a JSON string among the choices."""
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An integer, not a string of digits nor a boolean."""

    def to_internal_value(self, data: Any) -> int:
        """Refuse anything that is not a JSON integer."""
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class TimeoutsDoc(serializers.Serializer):
    """An agent's timeouts, in seconds."""

    connect = serializers.FloatField(required=False, min_value=0)
    firstToken = serializers.FloatField(required=False, min_value=0)
    betweenTokens = serializers.FloatField(required=False, min_value=0)
    total = serializers.FloatField(required=False, min_value=0)


class AgentSpecDoc(serializers.Serializer):
    """An AgentSpec (WIRE.md 6), as the schema describes it; ``AgentSpecField`` validates."""

    id = serializers.CharField(max_length=agent_specs.MAX_ID)
    name = serializers.CharField(required=False, max_length=agent_specs.MAX_NAME)
    endpoint = serializers.CharField(
        help_text="An absolute http(s) URL (no user info, no fragment), or python:<dotted.path>"
        " (staff and settings only)."
    )
    method = serializers.ChoiceField(choices=["POST"], required=False)
    headers = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text="Secrets: stored, sent to the agent, never shown again.",
    )
    triggers = serializers.ChoiceField(choices=list(TRIGGERS), required=False)
    bodyTemplate = serializers.DictField(required=False)
    format = serializers.ChoiceField(
        choices=list(agent_specs.FORMATS), required=False, help_text="What the agent streams."
    )
    policy = serializers.ChoiceField(
        choices=list(agent_specs.POLICIES),
        required=False,
        help_text="What a new message does while the agent answers (default queue).",
    )
    onInterrupt = serializers.ChoiceField(
        choices=list(agent_specs.ON_INTERRUPT),
        required=False,
        help_text="A generation whose worker died: end it with an error, or retry it.",
    )
    retries = serializers.IntegerField(
        required=False, min_value=0, max_value=agent_specs.MAX_RETRIES
    )
    timeouts = TimeoutsDoc(required=False)


@extend_schema_field(AgentSpecDoc)
class AgentSpecField(serializers.Field):
    """An AgentSpec, validated by ``agent_specs.parse`` (strict types, URL syntax, headers)."""

    def to_internal_value(self, data: Any) -> agent_specs.AgentSpec:
        """The validated spec, or a 400 naming the field that is wrong."""
        try:
            return agent_specs.parse(data)
        except agent_specs.SpecInvalid as exc:
            raise serializers.ValidationError(str(exc.detail)) from None

    def to_representation(self, value: agent_specs.AgentSpec) -> dict[str, Any]:
        """The spec without its secrets."""
        return agent_specs.public_spec(value)


class ErrorOut(serializers.Serializer):
    """An error: what went wrong, for people."""

    detail = serializers.CharField()


class SessionsQuery(serializers.Serializer):
    """``GET /v1/sessions/?archived=``."""

    archived = serializers.BooleanField(
        required=False, default=False, help_text="true: the archived sessions only"
    )


class SessionIn(serializers.Serializer):
    """``PUT /v1/sessions/<id>`` and ``POST /v1/sessions/``: an optional title."""

    title = StrictCharField(required=False, allow_blank=True, max_length=200, default="")


class SessionPatch(serializers.Serializer):
    """``PATCH /v1/sessions/<id>``: rename, archive or unarchive."""

    title = StrictCharField(required=False, allow_blank=True, max_length=200)
    archived = StrictBooleanField(required=False)


class SessionOut(serializers.Serializer):
    """A session as the API answers it."""

    sessionId = serializers.UUIDField(source="id")
    streamUrl = serializers.SerializerMethodField()
    title = serializers.CharField()
    role = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at")
    lastActivityAt = serializers.DateTimeField(source="last_activity_at", allow_null=True)
    archived = serializers.BooleanField()
    generating = serializers.SerializerMethodField()

    def get_streamUrl(self, session: Any) -> str:
        """Where the session's stream is read."""
        return f"/v1/stream/{session.stream_path}"

    def get_generating(self, session: Any) -> bool:
        """Whether an agent is generating in the session now."""
        return session.generating_since is not None


class MessageIn(serializers.Serializer):
    """``POST .../messages``. ``actorId`` and ``actorType`` are accepted and ignored: the actor
    is the authenticated user."""

    messageId = StrictUUIDField(required=False)
    content = StrictCharField(allow_blank=False, trim_whitespace=False)
    role = StrictChoiceField(choices=list(MESSAGE_ROLES), default="user")
    actorId = StrictCharField(required=False, allow_blank=True)
    actorType = StrictChoiceField(choices=["user", "agent"], required=False)
    txid = StrictUUIDField(required=False)
    agent = AgentSpecField(required=False)


class MessageOut(serializers.Serializer):
    """The answer to a post: the message's id."""

    messageId = serializers.CharField()


class MessagesQuery(serializers.Serializer):
    """``GET .../messages?limit=&before=``."""

    limit = serializers.IntegerField(min_value=1, max_value=1000, default=50)
    before = serializers.CharField(required=False, max_length=200)


class MessagesOut(serializers.Serializer):
    """A page of materialized messages and the offset their state stands at."""

    messages = serializers.ListField(child=serializers.DictField())
    offset = serializers.CharField()
    hasMore = serializers.BooleanField()


class EventsQuery(serializers.Serializer):
    """``GET .../events?offset=``."""

    offset = serializers.CharField(default="-1", max_length=100)


class EventsOut(serializers.Serializer):
    """Raw events of the session stream and where to read next."""

    events = serializers.ListField(child=serializers.DictField())
    offset = serializers.CharField()
    upToDate = serializers.BooleanField()


class MemberIn(serializers.Serializer):
    """``POST .../members``: invite a user."""

    username = StrictCharField(max_length=150)
    role = StrictChoiceField(choices=list(ROLES))


class MemberPatch(serializers.Serializer):
    """``PATCH .../members/<username>``: change a role."""

    role = StrictChoiceField(choices=list(ROLES))


class MemberOut(serializers.Serializer):
    """A member: username, public actorId, role."""

    username = serializers.CharField()
    actorId = serializers.CharField()
    role = serializers.CharField()


class MembersOut(serializers.Serializer):
    """The members of a session."""

    members = MemberOut(many=True)
