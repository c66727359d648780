"""The manifest's integrity record: a digest of its own content and an optional HMAC signature.

The model files are covered by their sha256 in the manifest; the manifest itself (metrics,
preprocessing, tensors, those sha256s) is covered by ``integrity.digest``, the sha256 of its
canonical JSON without the ``integrity`` field. A digest catches edits and damage, but anyone can
recompute it; the signature is what an attacker with write access to the bundle cannot forge
without the operator's key.

Why HMAC-SHA256 and not Ed25519: it needs nothing beyond the standard library, so the serving
install stays small, and the threat it answers is a bundle altered in storage or on its way
(registry, shared disk, artifact store) between the exporter and the server, both run by the same
operator. Its limit: every holder of the key can sign, so the key must stay with the exporting and
serving machines. The ``algorithm`` field leaves room for a public-key scheme.

This module must stay importable without torch or pandas: the server imports it.
"""

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelyard.core.errors import BundleError

INTEGRITY_FIELD = "integrity"
#: Environment variable naming the key file, for every command that takes ``--key-file``.
KEY_FILE_ENV = "MODELYARD_BUNDLE_KEY_FILE"
MIN_KEY_BYTES = 32
_SIGNED_PREFIX = b"modelyard-bundle-manifest-v1\0"  # a key never signs another kind of message
_KEY_ID_PREFIX = b"modelyard-bundle-key-id\0"

LEGACY = "legacy (model sha256 only)"
_SHA256_HEX = r"^[0-9a-f]{64}$"


class Signature(BaseModel):
    algorithm: Literal["hmac-sha256"] = "hmac-sha256"
    key_id: str = Field(
        pattern=r"^[0-9a-f]{16}$", description="Names the key (a hash of it), never the key."
    )
    value: str = Field(pattern=_SHA256_HEX, description="Hex HMAC-SHA256 of the digest.")


class Integrity(BaseModel):
    """Written into the manifest at export; covers everything else in it."""

    algorithm: Literal["sha256-canonical-json"] = "sha256-canonical-json"
    digest: str = Field(
        pattern=_SHA256_HEX, description="sha256 of the canonical JSON without this field."
    )
    signature: Signature | None = None


class Trust(BaseModel):
    """What loading established about a bundle; ``GET /info`` reports it."""

    state: str = Field(examples=["digest and signature verified", LEGACY])
    digest: str | None = None
    signed: bool = False
    signature_verified: bool = False
    key_id: str | None = None


class BundleKey:
    """An operator's signing key, read from a file (never from the bundle or the command line)."""

    def __init__(self, secret: bytes, source: str) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise BundleError(
                f"bundle key {source} holds {len(secret)} bytes; use at least {MIN_KEY_BYTES} "
                f"random bytes, e.g. `openssl rand -hex 32 > {source}`"
            )
        self._secret = secret
        self.key_id = hashlib.sha256(_KEY_ID_PREFIX + secret).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path | str) -> "BundleKey":
        """The key is the file's content without surrounding whitespace (a trailing newline)."""
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as exc:
            raise BundleError(f"cannot read bundle key file {path}: {exc.strerror}") from exc
        return cls(secret, str(path))

    def sign(self, digest: str) -> Signature:
        mac = hmac.new(self._secret, _SIGNED_PREFIX + digest.encode(), hashlib.sha256)
        return Signature(key_id=self.key_id, value=mac.hexdigest())

    def verifies(self, digest: str, signature: Signature) -> bool:
        """Constant-time comparison of the expected and the recorded signature."""
        return hmac.compare_digest(self.sign(digest).value, signature.value)


def optional_key(path: Path | str | None) -> BundleKey | None:
    return None if path is None or str(path) == "" else BundleKey.from_file(path)


def content_digest(raw: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of ``raw`` minus integrity."""
    body = {k: v for k, v in raw.items() if k != INTEGRITY_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(raw: dict[str, Any], key: BundleKey | None) -> dict[str, Any]:
    """``raw`` with a fresh integrity record (signed when a key is given), integrity last."""
    digest = content_digest(raw)
    record = Integrity(digest=digest, signature=None if key is None else key.sign(digest))
    body = {k: v for k, v in raw.items() if k != INTEGRITY_FIELD}
    return {**body, INTEGRITY_FIELD: record.model_dump(mode="json")}


def check_digest(raw: dict[str, Any], integrity: Integrity | None, where: Path) -> Trust:
    """The manifest's content still has the digest recorded at export (legacy: none recorded)."""
    if integrity is None:
        return Trust(state=LEGACY)
    actual = content_digest(raw)
    if not hmac.compare_digest(actual, integrity.digest):
        raise BundleError(
            f"{where} was changed after export (its content digest no longer matches the "
            "integrity record); re-export the bundle, or if the edit was intended, re-seal it "
            "with `modelyard bundle sign` (or `bundle seal` when it is not signed)"
        )
    signature = integrity.signature
    return Trust(
        state="digest verified" + ("; signature not checked (no key)" if signature else ""),
        digest=integrity.digest,
        signed=signature is not None,
        key_id=None if signature is None else signature.key_id,
    )


def check_signature(
    integrity: Integrity | None, trust: Trust, key: BundleKey | None, required: bool, where: Path
) -> Trust:
    """Apply the operator's policy: verify a signature when a key is given, refuse what
    ``required`` forbids (unsigned or legacy bundles); return the trust established."""
    if required and key is None:
        raise BundleError(
            f"a bundle signature is required but no key was given (--bundle-key-file or "
            f"{KEY_FILE_ENV})"
        )
    signature = None if integrity is None else integrity.signature
    if signature is None:
        if required:
            what = "a legacy bundle (no integrity record)" if integrity is None else "not signed"
            raise BundleError(
                f"{where} is {what} and a signature is required; sign it with "
                f"`modelyard bundle sign {where} --key-file KEY`"
            )
        return trust
    if key is None or integrity is None:
        return trust
    if signature.key_id != key.key_id:
        raise BundleError(
            f"{where} is signed with key {signature.key_id}, not with the given key {key.key_id}"
        )
    if not key.verifies(integrity.digest, signature):
        raise BundleError(f"{where}: the signature does not match its content; refusing it")
    return trust.model_copy(
        update={"state": "digest and signature verified", "signature_verified": True}
    )
