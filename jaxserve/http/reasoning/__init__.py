"""Reasoning parsers: a thinking model's `<think>…</think>` block -> `message.reasoning`."""
