"""A merged Llama-architecture model (safetensors) written as a GGUF file, with its base GGUF's metadata.

llama-cpp-python ships no HF-to-GGUF converter (llama.cpp's convert_hf_to_gguf.py is not in its wheel, nor
in the `gguf` package), so this writes the file with `gguf`'s GGUFWriter. A merged model has its base's
architecture, hyperparameters and tokenizer, so the metadata is copied from the base's own GGUF (the one
curate converted the base from: the embedded SmolLM2, or a FILE.gguf base) and only the tensors are new.
That keeps the tokenizer exactly llama.cpp's (its pre-tokenizer name, token types, merges) without
guessing it from a Hugging Face tokenizer. Each tensor is mapped to its GGUF name, Q and K projections are
permuted back to llama.cpp's rotary layout, and the tensor names and shapes must equal the base GGUF's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.errors import MissingDependency, UsageError

ARCHITECTURES = ("LlamaForCausalLM",)
# keys the writer sets itself, or that describe the base file's quantization rather than the model
_NOT_COPIED = ("general.architecture", "general.file_type", "general.quantization_version")


def base_gguf(base: str) -> Path:
    """The GGUF file a run's base was converted from: the embedded SmolLM2, or a FILE.gguf base."""
    from curate.embedded import EMBEDDED, EMBEDDED_ID, embedded_gguf_path

    if base in (EMBEDDED, EMBEDDED_ID):
        return embedded_gguf_path()
    path = Path(base)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    raise UsageError(f"base {base!r} has no GGUF file of its own to take the tokenizer and metadata from: curate "
                     "quantize converts runs on the embedded base or a FILE.gguf Llama base; for another base, "
                     "convert `curate merge`'s folder with llama.cpp's convert_hf_to_gguf.py")


def permute(weight: Any, heads: int) -> Any:
    """Hugging Face's rotary layout (two halves per head) back to llama.cpp's (interleaved pairs)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def to_gguf(model_dir: str | Path, base: str | Path, output: str | Path, *, f16: bool = False) -> Path:
    """Write `model_dir`'s weights (a merged Llama model) as a GGUF at `output`, in f32 (or f16 for 2-D tensors)."""
    try:
        import gguf
        import numpy as np
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise MissingDependency("gguf", "local", "writing GGUF files") from exc
    model_dir, out = Path(model_dir), Path(output)
    config = json.loads((model_dir / "config.json").read_text())
    if not set(config.get("architectures") or ()) & set(ARCHITECTURES):
        raise UsageError(f"{model_dir}: architecture {config.get('architectures')} is not one curate converts to "
                         f"GGUF ({', '.join(ARCHITECTURES)}); use llama.cpp's convert_hf_to_gguf.py")
    reader = gguf.GGUFReader(str(base))
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise UsageError(f"{base}: GGUF architecture {arch!r}, curate converts 'llama' only")
    expected = {t.name: tuple(int(x) for x in reversed(t.shape)) for t in reader.tensors}  # GGUF lists dims reversed
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    tensors: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        for key, value in load_file(str(file)).items():
            name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise UsageError(f"{file.name}: tensor {key} has no GGUF name for the llama architecture")
            if name == "output.weight" and name not in expected:
                continue  # tied to the token embedding, which llama.cpp reuses when output.weight is absent
            if key.endswith("q_proj.weight"):
                value = permute(value, heads)
            elif key.endswith("k_proj.weight"):
                value = permute(value, kv_heads)
            value = value.astype(np.float16 if f16 and value.ndim > 1 else np.float32)
            tensors[name] = value
    got = {n: tuple(t.shape) for n, t in tensors.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        shapes = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
        raise UsageError(f"{model_dir} does not match its base GGUF {base}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}, other shapes {shapes[:5]}")
    writer = gguf.GGUFWriter(str(out), arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in _NOT_COPIED:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for t in reader.tensors:  # the base file's tensor order
        writer.add_tensor(t.name, tensors[t.name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
