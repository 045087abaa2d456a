"""What every config class shares: unknown keys refused, values frozen, no defaults (params.yaml holds them), and the
ranges settings fall in: a value outside its range is refused when params.yaml is read, before anything runs (a
negative max_chars used to drop every row and overwrite a good output, exit 0)."""
from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=Section)

Count = Annotated[int, Field(ge=0)]                  # 0 allowed: sizes, limits where 0 means all or off
Positive = Annotated[int, Field(ge=1)]               # steps, batch sizes, lengths
Fraction = Annotated[float, Field(ge=0, le=1)]       # shares, scores, probabilities, drops of them
Ratio = Annotated[float, Field(gt=0)]                # candidate / reference, learning rates, strengths
Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=0, le=65535)]         # 0: a free port
