"""``/info``'s ``registry``: which registered model version is served, and the gates it passed.

``modelyard serve models:/NAME@ALIAS`` reads it from the registry when it resolves the reference
(:func:`modelyard.registry.promotion_record.registry_block`: the version's tags, among them the
promotion record ``modelyard promote`` leaves) and hands it to the workers in their settings, so
no worker needs the MLflow client; with ``--follow`` the watcher sends it with each version it
offers. ``/info`` shows it only while the version it describes is the one served (``registry``
is null for a bundle served from a directory).
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GateOutcome(BaseModel):
    """One promotion gate's verdict and the numbers behind it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(examples=["metrics", "latency"])
    passed: bool
    summary: str | None = Field(
        default=None, examples=["p95 4.1 ms over 200 requests, within the 50 ms limit"]
    )
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="The gate's numbers: per metric holder, candidate and verdict; latency "
        "percentiles in ms. Empty for promotions recorded before they were kept.",
    )


class RegistryBlock(BaseModel):
    """The registered version served and its promotion to the alias it was served through."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Registered model name.", examples=["nilm"])
    version: str = Field(description="Registry version number.", examples=["3"])
    alias: str | None = Field(
        description="The alias served (models:/NAME@ALIAS); null for models:/NAME/VERSION.",
        examples=["production"],
    )
    bundle_version: str | None = Field(description="The bundle version the registry recorded.")
    promoted_at: str | None = Field(
        default=None, description="When `modelyard promote` moved the alias here (UTC stamp)."
    )
    forced: bool | None = Field(
        default=None, description="Promoted with --force although a gate failed."
    )
    gates: list[GateOutcome] = Field(
        default_factory=list,
        description="The gates of that promotion; empty when the alias was set without one.",
    )
