"""Load test of a served ``eurosat`` bundle: ``modelyard loadtest URL --project eurosat`` or
``locust -f eurosat.py --host URL``. Uploads synthetic land-cover-sized JPEGs, or the images in
``MODELYARD_LOADTEST_IMAGES`` (a folder).
"""

from modelyard.loadtest.locustfiles.common import VisionLoad


class EurosatUser(VisionLoad):
    """A client of the eurosat service."""
