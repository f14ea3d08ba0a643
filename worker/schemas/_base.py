"""The two bases of every schema: frozen read models built from ORM rows, strict input models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
