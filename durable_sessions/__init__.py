"""durable_sessions: Durable Streams and collaborative AI chat sessions for Django."""

__version__ = "0.1.0"
