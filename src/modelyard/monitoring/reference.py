"""The bundle's reference profile, as the monitor reads it."""

from modelyard.core.bundle import Bundle
from modelyard.core.errors import BundleError
from modelyard.core.reference_profile import PROFILE_FILE, ReferenceProfile


def reference_profile(bundle: Bundle) -> ReferenceProfile:
    """The profile written at export; BundleError saying to re-export when the bundle has none.

    (One place to switch to ``Bundle.reference_profile()``, which also checks the manifest's
    digest of the file, once bundles carry it.)"""
    path = bundle.path / PROFILE_FILE
    if not path.is_file():
        raise BundleError(
            f"bundle {bundle.path} has no reference profile ({PROFILE_FILE}): it was exported "
            "before monitoring existed; re-export it with `modelyard export` to monitor it"
        )
    profile = ReferenceProfile.read(path)
    if profile.family != bundle.manifest.task:
        raise BundleError(
            f"{path} describes a {profile.family} model but the bundle holds a "
            f"{bundle.manifest.task} one; re-export the bundle"
        )
    return profile
