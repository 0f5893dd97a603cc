"""Shared pieces of the policy models: strict pydantic models and the identifier types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=64)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
ColumnName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


class PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

