"""What one ``POST /predict`` may cost, as a family's contract records it (vision, tabular).

Training writes a family's limits into its contract (``preprocessing.limits``) from the project's
``serving:`` configuration; the serving adapter reads them from the contract only, with the
deployer's explicit ``serve`` overrides on top. The saved training configuration is read only to
complete bundles written before the contracts held their limits
(:meth:`ServingLimits.of_old_bundle`, called from the contracts' ``parse``).
"""

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from modelyard.core.errors import ConfigError, first_error


class ServingLimits(BaseModel):
    """A family's request limits; subclasses declare them as fields with their defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_serving_config(cls, serving: Mapping[str, Any] | None) -> Self:
        """The limits from a project's ``serving:`` block (training); keys this family does not
        limit on are left to others. A bad value is a one-line :class:`ConfigError`."""
        return cls._validated(cls._known(serving), "project.serving")

    @classmethod
    def of_old_bundle(cls, config: Mapping[str, Any] | None) -> Self:
        """For bundles written before the contract held its limits only: the saved training
        configuration's ``project.serving`` values, else the defaults."""
        project = (config or {}).get("project") or {}
        return cls.model_validate(cls._known(project.get("serving")))

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Self:
        """These limits with the deployer's explicit settings (``serve``) replacing theirs."""
        chosen = {k: v for k, v in self._known(overrides).items() if v is not None}
        return self._validated(self.model_dump() | chosen, "serving setting") if chosen else self

    @classmethod
    def _known(cls, values: Mapping[str, Any] | None) -> dict[str, Any]:
        return {str(k): v for k, v in (values or {}).items() if k in cls.model_fields}

    @classmethod
    def _validated(cls, values: dict[str, Any], where: str) -> Self:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"{where} {first_error(exc)}") from None
