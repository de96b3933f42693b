"""`GET /version` response body (vLLM's shape: one `version` string)."""

from __future__ import annotations

from jaxserve.http.protocol.base import ProtocolModel


class VersionResponse(ProtocolModel):
    version: str
