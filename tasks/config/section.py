"""What every config class shares: unknown keys refused, values frozen, no defaults (params.yaml holds them)."""
from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=Section)
