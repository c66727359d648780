"""Load testing a running ``modelyard serve`` with Locust (headless), on 127.0.0.1 only.

``runner.run_loadtest`` starts Locust in a subprocess on the one locustfile in ``locustfiles/``
(its payloads are chosen by the served task family, :mod:`.payloads`) and turns its CSV
statistics into a typed summary. Nothing here imports Locust itself except the locustfile:
Locust patches the standard library with gevent on import, which must not happen in the
modelyard process.
"""
