"""AgentSpec: what registers an agent on a session, validated strictly, and where it may point.

An AgentSpec (WIRE.md 6) is ``{id, name?, endpoint, method?: "POST", headers?, triggers?:
"all"|"user-messages"|"mention", bodyTemplate?}``, plus the runtime's options of ours (all
optional, see docs/agents.md): ``format`` (the dialect the agent streams, ``auto`` by default),
``policy`` (what a new message does while the agent answers: ``queue``, ``interrupt``,
``parallel``, ``reject``), ``onInterrupt`` (``error`` or ``retry`` a generation whose worker
died), ``retries`` (0 to 5, before the first token) and ``timeouts`` (``{connect, firstToken,
betweenTokens, total}`` in seconds). ``parse()`` checks one, whatever brings it (the
agents API, an inline ``agent`` on a message, ``defaultAgents`` on login, ``DEFAULT_AGENTS``
in settings), and raises ``SpecInvalid`` (400) saying which field is wrong. Unknown fields are
ignored, as everywhere in the session API.

The endpoint is one of:

- an absolute ``http://`` or ``https://`` URL, without user info or fragment (a query string is
  kept server-side and never shown). ``check_url()`` resolves its host and refuses it unless
  every address is public, as webhooks do (``durable_sessions/outbound.py``). When
  ``AGENT_ALLOW_PRIVATE`` is on (``DS_AGENT_ALLOW_PRIVATE=1``), loopback and private networks
  (RFC 1918, CGNAT, IPv6 unique local) are allowed too, and only then plain ``http``: to a
  public address the agent's headers (its secrets) would travel in clear. Link-local (cloud
  metadata), multicast and the other special ranges stay refused either way.
  ``resolve_agent_url()`` is the same check for connect time: it returns the address to
  connect to, pinned, so a name that changed since registration (DNS rebinding) reaches
  nothing it may not.
- ``python:<dotted.path>``: a Python async generator run in the server's processes (the agent
  runtime imports it). Only staff and ``DEFAULT_AGENTS`` may register one: it is code of the
  server, not a URL chosen by a user.

Headers are the agent's secrets: they are stored, sent to the agent, and never shown again (not
on the stream, not in any answer). ``public_row()`` is what the stream's ``agent`` row and the
API's answers say about an agent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from durable_sessions import outbound
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import errors
from durable_sessions.sessions.models import TRIGGERS

PYTHON_SCHEME = "python:"
DEFAULT_TRIGGERS = "user-messages"
MAX_ID = 200
MAX_NAME = 200
MAX_HEADERS = 50
MAX_HEADER_NAME = 100
MAX_HEADER_VALUE = 8192
MAX_BODY_TEMPLATE_BYTES = 64 * 1024
RESOLVE_TIMEOUT = 5.0

AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # no ":" (keys), no "/" (URLs)
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
# Set by the runtime or by HTTP itself: an agent's configuration may not override them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)
FIELDS = ("id", "name", "endpoint", "method", "headers", "triggers", "bodyTemplate")
FORMATS = ("auto", "tanstack", "vercel", "openai", "agui")
POLICIES = ("queue", "interrupt", "parallel", "reject")
ON_INTERRUPT = ("error", "retry")
TIMEOUTS = ("connect", "firstToken", "betweenTokens", "total")
MAX_RETRIES = 5
MAX_TIMEOUT = 24 * 3600.0


class SpecInvalid(errors.Invalid):
    """An AgentSpec that cannot be taken (400); ``field`` names the field."""

    default_code = "invalid_agent"

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"agent {field_name}: {message}")
        self.field = field_name
        self.message = message


class AgentUrlRefused(errors.Invalid):
    """An agent endpoint that may not be reached (400 at registration; at connect time the
    runtime ends the generation with an error)."""

    default_code = "agent_url_refused"


@dataclass(frozen=True)
class AgentSpec:
    """A validated AgentSpec. ``headers`` are secrets: never shown, never on the stream."""

    id: str
    endpoint: str
    name: str = ""
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    triggers: str = DEFAULT_TRIGGERS
    body_template: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the runtime's: see ``_options``

    @property
    def is_python(self) -> bool:
        """Whether the agent is Python code of the server (``python:<dotted.path>``)."""
        return self.endpoint.startswith(PYTHON_SCHEME)


def _control(text: str) -> bool:
    return any(char < " " or char == "\x7f" for char in text)


def _string(data: dict[str, Any], name: str, *, limit: int, required: bool = False) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise SpecInvalid(name, "must be a string")
    if required and not value:
        raise SpecInvalid(name, "must not be empty")
    if len(value) > limit:
        raise SpecInvalid(name, f"is longer than {limit} characters")
    if _control(value):
        raise SpecInvalid(name, "must not contain control characters")
    return value


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecInvalid("headers", "must be an object of header names to string values")
    if len(value) > MAX_HEADERS:
        raise SpecInvalid("headers", f"holds at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, text in value.items():
        if not HEADER_NAME.fullmatch(name) or len(name) > MAX_HEADER_NAME:
            raise SpecInvalid("headers", f"{name[:100]!r} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise SpecInvalid("headers", f"{name!r} is set by the server, not by an agent")
        if name.lower() in seen:
            raise SpecInvalid("headers", f"{name!r} is given twice")
        seen.add(name.lower())
        if not isinstance(text, str):
            raise SpecInvalid("headers", f"the value of {name!r} must be a string")
        if len(text) > MAX_HEADER_VALUE or any(
            (char < " " and char != "\t") or char == "\x7f" for char in text
        ):
            raise SpecInvalid("headers", f"the value of {name!r} is not a header value")
    return dict(value)


def _body_template(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecInvalid("bodyTemplate", "must be a JSON object")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SpecInvalid("bodyTemplate", f"is not JSON: {exc}") from None
    if len(encoded.encode()) > MAX_BODY_TEMPLATE_BYTES:
        raise SpecInvalid("bodyTemplate", f"is larger than {MAX_BODY_TEMPLATE_BYTES} bytes")
    return value


def _options(data: dict[str, Any]) -> dict[str, Any]:
    """The runtime's options of ``data`` that are given, checked (absent ones are left out:
    the runtime's settings give their defaults)."""
    options: dict[str, Any] = {}
    for name, allowed in (("format", FORMATS), ("policy", POLICIES), ("onInterrupt", ON_INTERRUPT)):
        if name in data and data[name] is not None:
            if not isinstance(data[name], str) or data[name] not in allowed:
                raise SpecInvalid(name, f"must be one of {', '.join(allowed)}")
            options[name] = data[name]
    retries = data.get("retries")
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise SpecInvalid("retries", "must be an integer")
        if not 0 <= retries <= MAX_RETRIES:
            raise SpecInvalid("retries", f"must be from 0 to {MAX_RETRIES}")
        options["retries"] = retries
    timeouts = data.get("timeouts")
    if timeouts is not None:
        if not isinstance(timeouts, dict):
            raise SpecInvalid("timeouts", f"must be an object with {', '.join(TIMEOUTS)}")
        checked: dict[str, float] = {}
        for name, value in timeouts.items():
            if name not in TIMEOUTS:
                raise SpecInvalid(
                    "timeouts", f"{str(name)[:40]!r} is not one of {', '.join(TIMEOUTS)}"
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecInvalid("timeouts", f"{name} must be a number of seconds")
            if not 0 < value <= MAX_TIMEOUT:
                raise SpecInvalid("timeouts", f"{name} must be above 0 and at most {MAX_TIMEOUT:g}")
            checked[name] = float(value)
        if checked:
            options["timeouts"] = checked
    return options


def check_endpoint_syntax(value: Any) -> str:
    """``value`` if it is an endpoint an AgentSpec may name (see the module docstring), without
    resolving anything; ``SpecInvalid`` otherwise."""
    if not isinstance(value, str):
        raise SpecInvalid("endpoint", "must be a string")
    if value.startswith(PYTHON_SCHEME):
        if not DOTTED.fullmatch(value[len(PYTHON_SCHEME) :]):
            raise SpecInvalid("endpoint", "python: names a dotted path, like python:pkg.mod.agent")
        return value
    try:
        outbound.parse_url(value)
    except outbound.UrlRejected as exc:
        raise SpecInvalid(
            "endpoint", f"{exc.why} (an absolute http(s) URL or python:<path>)"
        ) from None
    if urlsplit(value).fragment or value.endswith("#"):
        raise SpecInvalid("endpoint", "a fragment (#...) is never sent: leave it out")
    return value


def parse(data: Any) -> AgentSpec:
    """The AgentSpec ``data`` holds (a JSON object); ``SpecInvalid`` naming what is wrong."""
    if not isinstance(data, dict):
        raise SpecInvalid("spec", "must be a JSON object")
    agent_id = _string(data, "id", limit=MAX_ID, required=True)
    if not AGENT_ID.fullmatch(agent_id):
        raise SpecInvalid("id", "holds letters, digits, '.', '_' and '-' (from a letter or digit)")
    method = data.get("method", "POST")
    if method != "POST" or not isinstance(method, str):
        raise SpecInvalid("method", 'must be "POST"')
    triggers = data.get("triggers", DEFAULT_TRIGGERS)
    if not isinstance(triggers, str) or triggers not in TRIGGERS:
        raise SpecInvalid("triggers", f"must be one of {', '.join(TRIGGERS)}")
    return AgentSpec(
        id=agent_id,
        name=_string(data, "name", limit=MAX_NAME),
        endpoint=check_endpoint_syntax(data.get("endpoint")),
        method="POST",
        headers=_headers(data.get("headers")),
        triggers=triggers,
        body_template=_body_template(data.get("bodyTemplate")),
        options=_options(data),
    )


def public_endpoint(endpoint: str) -> str:
    """``endpoint`` as it may be shown: without user info, query string or fragment."""
    if endpoint.startswith(PYTHON_SCHEME):
        return endpoint
    parts = urlsplit(endpoint)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def public_row(spec: AgentSpec) -> dict[str, Any]:
    """The value of the stream's ``agent`` row for ``spec`` (WIRE.md 3): no secrets."""
    return {
        "agentId": spec.id,
        "name": spec.name or spec.id,
        "endpoint": public_endpoint(spec.endpoint),
        "triggers": spec.triggers,
    }


def public_spec(spec: AgentSpec) -> dict[str, Any]:
    """``spec`` as the API answers it: the stream row's fields, the method, the body template
    and the names (never the values) of its headers."""
    return {
        "id": spec.id,
        **{k: v for k, v in public_row(spec).items() if k != "agentId"},
        "method": spec.method,
        "bodyTemplate": spec.body_template,
        "headerNames": sorted(spec.headers),
        **spec.options,
    }


# -- where an endpoint may point -----------------------------------------------------------


def _checked(url: str, resolver: outbound.Resolver | None) -> tuple[outbound.Target, list[Any]]:
    try:
        target = outbound.parse_url(url)
    except outbound.UrlRejected as exc:
        raise AgentUrlRefused(f"agent endpoint refused: {exc.why}") from None
    allow = bool(ds_settings.AGENT_ALLOW_PRIVATE)
    try:
        addresses = outbound.checked_addresses(
            target,
            resolver or outbound.system_resolver,
            allow_loopback=allow,
            allow_private=allow,
            timeout=RESOLVE_TIMEOUT,
        )
    except outbound.UrlRejected as exc:
        raise AgentUrlRefused(
            f"agent endpoint refused: {exc.why} (DS_AGENT_ALLOW_PRIVATE=1 allows loopback and"
            " private networks)"
            if "loopback" in exc.why or "private" in exc.why or "shared" in exc.why
            else f"agent endpoint refused: {exc.why}"
        ) from None
    except outbound.Unresolved as exc:
        raise AgentUrlRefused(f"agent endpoint refused: {exc}") from None
    if target.scheme == "http" and any(outbound.is_public(a) for a in addresses):
        raise AgentUrlRefused(
            "agent endpoint refused: use https to a public address (the agent's headers would"
            " travel in clear)"
        )
    return target, addresses


def check_url(url: str, *, resolver: outbound.Resolver | None = None) -> None:
    """Raise ``AgentUrlRefused`` unless an agent may point at ``url`` now (its name resolved,
    every address allowed)."""
    _checked(url, resolver)


def resolve_agent_url(
    url: str, *, resolver: outbound.Resolver | None = None
) -> tuple[str, int, str]:
    """``(host, port, pinned_ip)`` to connect to for the agent endpoint ``url``, checked now
    (at connect time, against DNS rebinding); ``AgentUrlRefused`` when it may not be reached.
    Connect to ``pinned_ip`` only, sending ``host`` as the ``Host`` header and TLS server name."""
    target, addresses = _checked(url, resolver)
    return target.host, target.port, str(addresses[0])
