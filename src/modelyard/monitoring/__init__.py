"""Monitoring of served models: reference profiles, drift and realised accuracy.

Reads each family's reference profile from the bundle and the prediction log (and its feedback
table) that ``modelyard serve`` writes, and nothing else; never imported by the server.
"""
