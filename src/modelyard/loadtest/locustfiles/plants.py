"""Load test of a served ``plants`` bundle: ``modelyard loadtest URL --project plants`` or
``locust -f plants.py --host URL``. Uploads synthetic leaf-sized JPEGs, or the images in
``MODELYARD_LOADTEST_IMAGES`` (a folder).
"""

from modelyard.loadtest.locustfiles.common import VisionLoad


class PlantsUser(VisionLoad):
    """A client of the plants service."""
