"""Monitoring of served models: reference profiles, drift and realised accuracy (next issue).

The slot the architecture reserves for the ``monitor`` stage (docs/architecture.md): it will read
each family's contract and example request from the bundle, and the prediction log that
``modelyard serve`` writes, and nothing else. Empty until that stage lands.
"""
