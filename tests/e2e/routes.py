"""Every route of the session API, read from its OpenAPI schema (``/v1/schema/``), with a
request each could take: so a test that walks them covers routes added later without a change.

``routes(schema)`` lists ``Route(method, template, body, public)``; ``Route.session_path`` fills
the path parameters (the session id first, then ``{username}``...); ``body`` is a body that the
route's request serializer accepts (every field with a valid value: a PATCH component marks
none required, though the view may require some), so that a refusal is about who asks, not
about what they sent.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

METHODS = ("get", "put", "post", "patch", "delete")
PARAMETER = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class Route:
    """One operation of the schema."""

    method: str  # upper case
    template: str  # e.g. /v1/sessions/{id}/messages
    body: dict[str, Any] | None
    public: bool  # the schema lets anonymous clients call it (``{}`` among its security)

    @property
    def parameters(self) -> list[str]:
        """The path parameters, in order."""
        return PARAMETER.findall(self.template)

    @property
    def in_session(self) -> bool:
        """Whether the route is about one session (``/v1/sessions/{id}...``)."""
        return self.template.startswith("/v1/sessions/{")

    def session_path(self, session_id: str, values: dict[str, str]) -> str:
        """The path, the first parameter of a session route being ``session_id``."""
        if self.in_session:
            values = {self.parameters[0]: session_id, **values}
        return self.path(values)

    def path(self, values: dict[str, str]) -> str:
        """The template with its parameters filled from ``values`` (``"x"`` for an unknown one)."""
        return PARAMETER.sub(lambda m: values.get(m[1], "x"), self.template)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, name = node["$ref"].split("/")
        node = schema["components"]["schemas"][name]
    return node


def example(schema: dict[str, Any], node: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """A value that fits ``node`` (a JSON schema in ``schema``); fields named in ``overrides``
    take their value from there."""
    node = _resolve(schema, node)
    for combined in ("allOf", "oneOf", "anyOf"):
        if combined in node:
            return example(schema, node[combined][0], overrides)
    if "enum" in node:
        return next(v for v in node["enum"] if v not in ("", None))
    kind = node.get("type", "object")
    if kind == "object":
        return {
            name: overrides[name]
            if name in overrides
            else example(schema, node["properties"][name], overrides)
            for name in node.get("properties", {})
            if not _resolve(schema, node["properties"][name]).get("readOnly")
        }
    if kind == "array":
        return [example(schema, node.get("items", {}), overrides)]
    if kind == "integer":
        return max(1, node.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if node.get("format") == "uuid":
        return str(uuid.uuid4())
    return "x" * max(1, node.get("minLength", 1))


def routes(schema: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[Route]:
    """Every operation of ``schema``, each with a valid JSON body (or None)."""
    found = []
    for template, operations in sorted(schema["paths"].items()):
        for method in METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            content = operation.get("requestBody", {}).get("content", {})
            body = None
            if "application/json" in content:
                body = example(schema, content["application/json"]["schema"], overrides or {})
            public = {} in operation.get("security", schema.get("security", []))
            found.append(Route(method.upper(), template, body, public))
    return found
