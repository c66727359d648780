"""The locustfile (:data:`LOCUSTFILE`); its payloads come from the served bundle's task family.

Run it directly with ``locust -f $(python -c "from modelyard.loadtest.locustfiles import
LOCUSTFILE; print(LOCUSTFILE)") --host http://127.0.0.1:8000``, or through ``modelyard
loadtest``. This package's ``__init__`` must not import Locust.
"""

from pathlib import Path

#: The one locustfile, for every project of every known task family.
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
