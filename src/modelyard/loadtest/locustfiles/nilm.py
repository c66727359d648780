"""Load test of a served ``nilm`` bundle: ``modelyard loadtest URL --project nilm`` or
``locust -f nilm.py --host URL``. Posts mains power series: a model window of readings by default,
``MODELYARD_LOADTEST_NILM_LENGTH=day`` (or a number of readings) for longer ones.
"""

from modelyard.loadtest.locustfiles.common import NilmLoad


class NilmUser(NilmLoad):
    """A client of the nilm service."""
