"""`curate synth`: resumable teacher-model generation with fact-flagging (see the README, section `curate synth`).

    recipe.py   YAML recipe -> SynthRecipe (validated, templates compiled, documents loaded), seeds
    render.py   sandboxed jinja2 templates and seed variables
    client.py   the async OpenAI client with bounded retries, rate limits and the budget
    cache.py    SQLite (WAL) request cache and token/cost ledger
    engine.py   request planning and the concurrent run loop
    facts.py    claim extraction and support checking
    verify.py   --verify: the teacher as a judge of each claim
    local.py    the embedded llama.cpp teacher
    api.py      synthesize(): all of the above -> Parquet + failures file
"""

from __future__ import annotations

from curate.synth.cache import Cache, request_key
from curate.synth.client import RetryPolicy
from curate.synth.facts import check_claims, extract_claims
from curate.synth.local import LocalTeacher, start_local_teacher
from curate.synth.recipe import SynthRecipe, load_seeds, load_synth_recipe
from curate.synth.stage import SynthSummary, default_paths, synthesize

__all__ = [
    "Cache",
    "LocalTeacher",
    "RetryPolicy",
    "SynthRecipe",
    "SynthSummary",
    "check_claims",
    "default_paths",
    "extract_claims",
    "load_seeds",
    "load_synth_recipe",
    "request_key",
    "start_local_teacher",
    "synthesize",
]
