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

from curate.lazy import lazy

_WHERE = {
    "Cache": "curate.synth.cache",
    "request_key": "curate.synth.cache",
    "RetryPolicy": "curate.synth.client",
    "check_claims": "curate.synth.facts",
    "extract_claims": "curate.synth.facts",
    "LocalTeacher": "curate.synth.local",
    "start_local_teacher": "curate.synth.local",
    "SynthRecipe": "curate.synth.recipe",
    "load_seeds": "curate.synth.recipe",
    "load_synth_recipe": "curate.synth.recipe",
    "SynthSummary": "curate.synth.stage",
    "default_paths": "curate.synth.stage",
    "synthesize": "curate.synth.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
