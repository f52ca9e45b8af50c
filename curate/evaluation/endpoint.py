"""Greedy replies from an OpenAI-compatible completions endpoint (llama.cpp's server, say), for `evaluate(sources=...)`.

The prompt is sent as text already rendered by the chat template, exactly as `curate eval` renders it for
the model it loads, so the served model sees the same conversation; the server stops at its
end-of-generation tokens. Sampling is greedy and repeat_penalty 1.0, a llama.cpp extension whose server
default (1.1) would change greedy replies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curate.errors import CurateError


def endpoint_source(base_url: str, model: str, *, timeout: float = 300.0) -> Callable[..., list[str]]:
    """A reply source (curate.evaluation.stage.ReplySource) that asks `model` at `base_url` for each prompt in turn."""

    def replies(texts: list[str], max_new_tokens: int, advance: Callable[[int], Any]) -> list[str]:
        import openai

        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=timeout)
        out = []
        for i, text in enumerate(texts):
            try:
                r = client.completions.create(model=model, prompt=text, max_tokens=max_new_tokens, temperature=0.0,
                                              extra_body={"repeat_penalty": 1.0})
            except openai.OpenAIError as exc:
                raise CurateError(f"{base_url}: prompt {i + 1} of {len(texts)} failed: {exc}") from exc
            out.append(r.choices[0].text or "")
            advance(1)
        return out

    return replies
