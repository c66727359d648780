"""Load testing a running ``modelyard serve`` with Locust (headless), on 127.0.0.1 only.

``runner.run_loadtest`` starts Locust in a subprocess on one of the per-project locustfiles in
``locustfiles/`` and turns its CSV statistics into a typed summary. Nothing here imports Locust
itself except the locustfiles: Locust patches the standard library with gevent on import, which
must not happen in the modelyard process.
"""
