"""Tool-call parsers: the model's tool-call markup in generated text -> OpenAI `tool_calls`."""
