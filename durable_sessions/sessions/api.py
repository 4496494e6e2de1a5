"""The session API (REST framework), at ``/v1/sessions/``: thin views over ``service.py``.

Routes, bodies and answers follow the reference proxy's wire (WIRE.md section 6) plus ours:
the list of my sessions, creation with a title, members, and catch-up reads (materialized
messages, raw events). Every view validates its body with a strict serializer (400), and
every error the service raises carries its status (404, 403, 409...); nothing answers 500 on
bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status, viewsets
from rest_framework import serializers as drf_serializers
from rest_framework.authentication import TokenAuthentication
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from durable_sessions import jsontext, streams
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import guard, roles, service
from durable_sessions.sessions import serializers as s
from durable_sessions.sessions.auth import SameOriginSessionAuthentication
from durable_sessions.sessions.schema import SessionSchema


def _valid(serializer_class: type[drf_serializers.Serializer], data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise drf_serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _query(serializer_class: type[drf_serializers.Serializer], request: Request) -> dict:
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def session_body(access: service.Access) -> dict[str, Any]:
    """A session with the caller's role, as the API answers it."""
    session = access.session
    session.role = access.role  # type: ignore[attr-defined]
    return dict(s.SessionOut(session).data)


class FastJSONRenderer(JSONRenderer):
    """REST framework's JSON renderer, writing with orjson (``jsontext.dumps``): a page of 500
    messages is rendered several times faster. What orjson cannot write goes the usual way."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The JSON text of ``data`` (empty for None, as REST framework does)."""
        if data is None:
            return b""
        try:
            return jsontext.dumps(data)
        except (TypeError, ValueError):
            return super().render(data, accepted_media_type, renderer_context)


class SessionJSONParser(JSONParser):
    """REST framework's JSON parser, reading with ``jsontext.loads``: orjson, and a 400 (never a
    500) for a body nested too deeply, ``NaN``, or text that is not JSON. The sendBeacon parser
    of logout shares its checks (``presence_api.TextJSONParser``)."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """The JSON document of the body; 400 when it nests deeper than ``MAX_JSON_DEPTH``
        (what the log takes), so that nothing downstream recurses that deep."""
        try:
            data = jsontext.loads(stream.read())
        except ValueError as exc:
            raise exceptions.ParseError(f"the body is not JSON: {exc}") from None
        if jsontext.depth(data) > ds_settings.MAX_JSON_DEPTH:
            raise exceptions.ParseError(
                f"the body nests deeper than {ds_settings.MAX_JSON_DEPTH} levels"
            )
        return data


class SessionAPIView(viewsets.ViewSet):
    """Shared by the session API's views: authentication, permissions, errors."""

    renderer_classes = [FastJSONRenderer]
    parser_classes = [SessionJSONParser, FormParser, MultiPartParser]

    authentication_classes = [TokenAuthentication, SameOriginSessionAuthentication]
    permission_classes = [IsAuthenticated]
    schema = SessionSchema()  # declares the errors every view can answer

    def needed_action(self) -> str:
        """The role action this view needs at least (reads: ``read``; writes: ``write``)."""
        return roles.READ if self.request.method in SAFE_METHODS else roles.WRITE

    def handle_exception(self, exc: Exception) -> Response:
        """Errors of the log answer with their own status; 503 says when to retry. A refused
        body is answered 403/404 instead when the caller may not use this route at all."""
        if isinstance(exc, exceptions.ValidationError | exceptions.ParseError) and (
            self.kwargs.get("pk") is not None and self.request.user.is_authenticated
        ):
            exc = (
                guard.refusal(
                    user=self.request.user,
                    session_id=self.kwargs["pk"],
                    action=self.needed_action(),
                )
                or exc
            )
        if isinstance(exc, streams.StreamError):
            response = Response({"detail": str(exc)}, status=exc.status)
        else:
            response = super().handle_exception(exc)
        if response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
            response["Retry-After"] = "1"
        return response


class SessionViewSet(SessionAPIView):
    """Sessions, their messages, events and members."""

    lookup_value_regex = "[^/]+"

    @extend_schema(parameters=[s.SessionsQuery], responses=s.SessionOut(many=True))
    def list(self, request: Request) -> Response:
        """My sessions, most recently active first (``?archived=true``: the archived ones)."""
        query = _query(s.SessionsQuery, request)
        sessions = service.session_list(user=request.user, archived=query["archived"])
        return Response(s.SessionOut(sessions, many=True).data)

    @extend_schema(request=s.SessionIn, responses={201: s.SessionOut})
    def create(self, request: Request) -> Response:
        """Create a session with a new id, owned by me."""
        body = _valid(s.SessionIn, request.data)
        session, _ = service.session_create(owner=request.user, title=body["title"])
        access = service.session_get(user=request.user, session_id=session.pk)
        return Response(session_body(access), status=status.HTTP_201_CREATED)

    @extend_schema(request=s.SessionIn, responses={200: s.SessionOut, 201: s.SessionOut})
    def update(self, request: Request, pk: str) -> Response:
        """Create the session ``pk`` (201), or confirm the one I may read (200)."""
        body = _valid(s.SessionIn, request.data if request.data else {})
        session, created = service.session_create(
            owner=request.user, session_id=pk, title=body["title"]
        )
        access = service.session_get(user=request.user, session_id=session.pk)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(session_body(access), status=code)

    @extend_schema(responses=s.SessionOut)
    def retrieve(self, request: Request, pk: str) -> Response:
        """The session."""
        return Response(session_body(service.session_get(user=request.user, session_id=pk)))

    @extend_schema(request=s.SessionPatch, responses=s.SessionOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        """Rename, archive or unarchive (owners)."""
        body = _valid(s.SessionPatch, request.data)
        if "archived" in body:
            service.session_archive(user=request.user, session_id=pk, archived=body["archived"])
        if "title" in body:
            service.session_update(user=request.user, session_id=pk, title=body["title"])
        return Response(session_body(service.session_get(user=request.user, session_id=pk)))

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        """Delete the session and its stream (owners)."""
        service.session_delete(user=request.user, session_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], parameters=[s.MessagesQuery], responses=s.MessagesOut)
    @extend_schema(methods=["POST"], request=s.MessageIn, responses={200: s.MessageOut})
    @action(detail=True, methods=["get", "post"])
    def messages(self, request: Request, pk: str) -> Response:
        """GET: a page of the materialized messages. POST: post a message as me."""
        if request.method == "GET":
            query = _query(s.MessagesQuery, request)
            return Response(
                service.messages_read(
                    user=request.user,
                    session_id=pk,
                    limit=query["limit"],
                    before=query.get("before"),
                )
            )
        body = _valid(s.MessageIn, request.data)
        message_id = service.message_post(
            user=request.user,
            session_id=pk,
            content=body["content"],
            message_id=body.get("messageId"),
            role=body["role"],
            txid=str(body["txid"]) if body.get("txid") else None,
            agent=body.get("agent"),
        )
        return Response({"messageId": message_id})

    @extend_schema(parameters=[s.EventsQuery], responses=s.EventsOut)
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Response:
        """The raw events of the session stream from ``?offset=`` (default the start)."""
        query = _query(s.EventsQuery, request)
        return Response(
            service.events_read(user=request.user, session_id=pk, offset=query["offset"])
        )

    @extend_schema(methods=["GET"], responses=s.MembersOut)
    @extend_schema(methods=["POST"], request=s.MemberIn, responses={201: s.MemberOut})
    @action(detail=True, methods=["get", "post"])
    def members(self, request: Request, pk: str) -> Response:
        """GET: the members. POST: invite a user with a role (owners)."""
        if request.method == "GET":
            return Response({"members": service.member_list(user=request.user, session_id=pk)})
        body = _valid(s.MemberIn, request.data)
        member = service.member_add(
            user=request.user, session_id=pk, username=body["username"], role=body["role"]
        )
        return Response(member, status=status.HTTP_201_CREATED)


class MemberViewSet(SessionAPIView):
    """One member of a session: change their role, remove them, or leave."""

    def needed_action(self) -> str:
        """Changing a role is the owners'; anyone who reads may leave."""
        return roles.READ if self.request.method == "DELETE" else roles.MANAGE

    @extend_schema(request=s.MemberPatch, responses=s.MemberOut)
    def partial_update(self, request: Request, pk: str, username: str) -> Response:
        """Change a member's role (owners)."""
        body = _valid(s.MemberPatch, request.data)
        member = service.member_update(
            user=request.user, session_id=pk, username=username, role=body["role"]
        )
        return Response(member)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str, username: str) -> Response:
        """Remove a member (owners), or leave (myself)."""
        service.member_remove(user=request.user, session_id=pk, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)
