"""Base classes fixing how each spec object treats keys the spec does not list.

The spec marks most objects `additionalProperties: true` (vLLM lets clients send extra keys, e.g.
`reasoning` on an assistant message), a few `false`, and leaves the rest unstated. Each protocol model
inherits the base matching its schema so that choice is made once, here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

_COMMON = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)
"""Aliases exist only where a spec key cannot be a Python attribute (`schema`, `json`, `_backend`): accept
both spellings on input and write the spec spelling on output."""


class ProtocolModel(BaseModel):
    """A spec object without `additionalProperties`: unknown keys are dropped."""

    model_config = ConfigDict(**_COMMON, extra="ignore")


class ExtensibleModel(BaseModel):
    """A spec object with `additionalProperties: true`: unknown keys are kept (see `model_extra`)."""

    model_config = ConfigDict(**_COMMON, extra="allow")


class ClosedModel(BaseModel):
    """A spec object with `additionalProperties: false`: unknown keys are a validation error."""

    model_config = ConfigDict(**_COMMON, extra="forbid")
