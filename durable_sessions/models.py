"""Django discovers the app's models here; each layer keeps its own in its subpackage."""

from durable_sessions.agents.models import Job
from durable_sessions.sessions.models import Agent, Device, Membership, Session
from durable_sessions.streams.models import Entry, Producer, Stream
from durable_sessions.streams.subscriptions.models import SigningKey, Subscription, SubscriptionLink

__all__ = [
    "Agent",
    "Device",
    "Entry",
    "Job",
    "Membership",
    "Producer",
    "Session",
    "SigningKey",
    "Stream",
    "Subscription",
    "SubscriptionLink",
]
