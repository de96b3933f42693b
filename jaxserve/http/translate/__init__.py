"""Request <-> engine translation for chat completions: messages for the chat template, template
arguments, SamplingParams, and the response built from the engine's final output."""
