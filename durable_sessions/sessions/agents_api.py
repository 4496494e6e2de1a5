"""The agents API of a session: ``GET``/``POST .../agents``, ``PATCH``/``DELETE
.../agents/<agentId>`` (WIRE.md 6; ``PATCH`` is ours), thin views over ``service.agent_*``.

No answer carries an agent's headers or the query string of its endpoint: the agents' secrets
are written, never read back.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from durable_sessions.sessions import agent_specs, service
from durable_sessions.sessions.api import SessionAPIView, _valid
from durable_sessions.sessions.models import TRIGGERS
from durable_sessions.sessions.serializers import AgentSpecField

MAX_AGENTS_PER_REQUEST = 50


class AgentsIn(serializers.Serializer):
    """``POST .../agents``: the agents to register (or update, by id)."""

    agents = serializers.ListField(child=AgentSpecField(), max_length=MAX_AGENTS_PER_REQUEST)


class AgentOut(serializers.Serializer):
    """An agent as the API shows it: no headers (only their names), no query string."""

    id = serializers.CharField()
    name = serializers.CharField()
    endpoint = serializers.CharField()
    triggers = serializers.ChoiceField(choices=list(TRIGGERS))
    method = serializers.CharField()
    bodyTemplate = serializers.DictField()
    headerNames = serializers.ListField(child=serializers.CharField())


class AgentsOut(serializers.Serializer):
    """The agents of a session."""

    agents = AgentOut(many=True)


class SuccessOut(serializers.Serializer):
    """``{success: true}``."""

    success = serializers.BooleanField()


class AgentPatch(serializers.Serializer):
    """``PATCH .../agents/<agentId>``: the fields to replace (checked as a whole AgentSpec once
    merged with the stored one; ``headers: null`` clears them)."""

    name = serializers.CharField(required=False)
    endpoint = serializers.CharField(required=False)
    method = serializers.ChoiceField(choices=["POST"], required=False)
    headers = serializers.DictField(child=serializers.CharField(), required=False, allow_null=True)
    triggers = serializers.ChoiceField(choices=list(TRIGGERS), required=False)
    bodyTemplate = serializers.DictField(required=False, allow_null=True)


def _changes(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
    return {name: data[name] for name in agent_specs.FIELDS if name in data}


class AgentsView(SessionAPIView):
    """The agents registered on a session."""

    @extend_schema(responses=AgentsOut)
    def index(self, request: Request, pk: str) -> Response:
        """The agents, without their secrets."""
        return Response({"agents": service.agent_list(user=request.user, session_id=pk)})

    @extend_schema(request=AgentsIn, responses={200: SuccessOut})
    def create(self, request: Request, pk: str) -> Response:
        """Register agents (a URL: owners and staff; a Python agent: staff)."""
        body = _valid(AgentsIn, request.data)
        service.agent_register(user=request.user, session_id=pk, specs=body["agents"])
        return Response({"success": True})


class AgentView(SessionAPIView):
    """One agent of a session."""

    lookup_value_regex = "[^/]+"

    @extend_schema(request=AgentPatch, responses=AgentOut)
    def partial_update(self, request: Request, pk: str, agent_id: str) -> Response:
        """Change some of its fields (owners, staff)."""
        agent = service.agent_update(
            user=request.user, session_id=pk, agent_id=agent_id, changes=_changes(request.data)
        )
        return Response(agent)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str, agent_id: str) -> Response:
        """Remove it (owners, staff)."""
        service.agent_delete(user=request.user, session_id=pk, agent_id=agent_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
