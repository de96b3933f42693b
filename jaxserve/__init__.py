"""jaxserve: an LLM inference server on JAX serving vLLM's extended OpenAI chat-completions API."""

__version__ = "0.1.0"
