"""Tests of the state layer (durable_sessions/state/)."""
