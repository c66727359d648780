"""Load test of a served ``avm`` bundle: ``modelyard loadtest URL --project avm`` or
``locust -f avm.py --host URL``. Posts the served example apartment with its numbers slightly
perturbed.
"""

from modelyard.loadtest.locustfiles.common import TabularLoad


class AvmUser(TabularLoad):
    """A client of the avm service."""
