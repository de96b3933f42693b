"""What every route shares: the engine, the served model names and the output parsers, stored once on
the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiohttp import web

from jaxserve.errors import ModelNotFound
from jaxserve.http.parser_settings import ParserSettings

if TYPE_CHECKING:
    from jaxserve.engine.protocol import EngineClient


@dataclass(frozen=True)
class ServerState:
    engine: EngineClient
    served_model_names: tuple[str, ...]
    created: int
    """Unix time the app was built: the `created` of every model card."""
    parsers: ParserSettings = ParserSettings()
    """How generated text is read: tool-call and reasoning parsers."""

    def resolve_model(self, requested: str | None) -> str:
        """The served name a request addresses: its `model`, or the first served name when omitted."""
        if requested is None:
            return self.served_model_names[0]
        if requested not in self.served_model_names:
            raise ModelNotFound(requested)
        return requested


SERVER_STATE: Final = web.AppKey("jaxserve_server_state", ServerState)
