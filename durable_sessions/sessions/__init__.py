"""The sessions layer: collaborative sessions on the streams and state layers.

A session is a row (``models.Session``: title, owner, members with roles, agents, devices)
plus one JSON stream, ``sessions/<id>``, that carries its ``chunk``, ``presence`` and ``agent``
rows. Every entry point goes through ``service.py``; the REST API is ``api.py`` at
``/v1/sessions/`` (``urls.py``). Importing this package loads no models: import
``durable_sessions.sessions.service`` for the functions.
"""
