"""`curate quantize`: a run's adapter merged, converted to GGUF, quantized by llama.cpp and evaluated per file.

    config.py   QuantizeConfig
    convert.py  the merged Llama model as a GGUF, with its base GGUF's metadata
    stage.py    quantize(): merge, convert, quantize, serve and evaluate each file, the loss gate
    render.py   what the command prints

torch, transformers, gguf and llama_cpp are imported inside the functions that need them.
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "QuantizeConfig": "curate.quantize.config",
    "quantize": "curate.quantize.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = ["QuantizeConfig", "quantize"]
