"""Load test of a served ``kc_house`` bundle: ``modelyard loadtest URL --project kc_house`` or
``locust -f kc_house.py --host URL``. Posts the served example house with its numbers slightly
perturbed.
"""

from modelyard.loadtest.locustfiles.common import TabularLoad


class KcHouseUser(TabularLoad):
    """A client of the kc_house service."""
