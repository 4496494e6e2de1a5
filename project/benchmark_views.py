"""The floor of ``benchmarks/session_messages.py``: a trivial REST framework POST view.

Served at ``POST /bench/floor`` only when ``DS_BENCHMARK_VIEWS=1`` (``project/urls.py``). It does
what every session API view does before the service runs (token authentication, the JSON body
parsed and validated by a serializer, a JSON answer) and nothing more: no session, no stream, no
database write. ``POST /v1/sessions/<id>/messages`` measured beside it, on the same server in the
same run, is read as a ratio to it.
"""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class FloorIn(serializers.Serializer):
    """The body of a message post, as ``MessageIn`` takes it."""

    content = serializers.CharField()
    txid = serializers.UUIDField(required=False)


class FloorView(APIView):
    """Authenticate, validate, answer: ``{"messageId": "floor"}``."""

    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        """Validate the body and answer as a message post does."""
        serializer = FloorIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response({"messageId": "floor"})
