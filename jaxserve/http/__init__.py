"""jaxserve.http: the aiohttp server for the OpenAI-compatible API (see `build_app`)."""
