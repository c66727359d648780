"""The bundle's reference profile, as the monitor reads it."""

from modelyard.core.bundle import Bundle
from modelyard.core.errors import BundleError
from modelyard.core.reference_profile import ReferenceProfile


def reference_profile(bundle: Bundle) -> ReferenceProfile:
    """The profile written at export (verified against the manifest); BundleError saying to
    re-export when the bundle has none or it describes another family."""
    profile = bundle.reference_profile()
    if profile.family != bundle.manifest.task:
        raise BundleError(
            f"the reference profile of {bundle.path} describes a {profile.family} model but the "
            f"bundle holds a {bundle.manifest.task} one; re-export the bundle"
        )
    return profile
