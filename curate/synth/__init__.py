"""`curate synth`: resumable teacher-model generation with fact-flagging (see the README, section `curate synth`).

    config.py     SynthConfig: the settings (teacher, recipe, seeds, limits)
    recipe.py     YAML recipe -> SynthRecipe (validated, templates compiled, documents loaded), seeds
    templates.py  sandboxed jinja2 templates and seed variables
    client.py     the async OpenAI client with bounded retries, rate limits and the budget
    cache.py      SQLite (WAL) request cache and token/cost ledger
    jobs.py       request planning and the concurrent run loop
    facts.py      claim extraction and support checking (values a schema defines are no claims)
    checks.py     the recipe's `checks:`: label consistency across answers, the teacher verifying its labels
    verify.py     --verify: the teacher as a judge of each claim
    local.py      the embedded llama.cpp teacher
    phases.py     a chunk of requests through generate -> label checks -> agreement -> --verify -> fact gate
    sinks.py      the output set the chunks' rows stream into (rows, review file, failures in phase order)
    stage.py      synthesize(): all of the above -> Parquet + failures file, and a StageOutcome
    render.py     what `curate synth` prints for people
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "Cache": "curate.synth.cache",
    "request_key": "curate.synth.cache",
    "RetryPolicy": "curate.synth.client",
    "SynthConfig": "curate.synth.config",
    "check_claims": "curate.synth.facts",
    "extract_claims": "curate.synth.facts",
    "schema_values": "curate.synth.facts",
    "LocalTeacher": "curate.synth.local",
    "start_local_teacher": "curate.synth.local",
    "SynthRecipe": "curate.synth.recipe",
    "grounding_files": "curate.synth.recipe",
    "load_seeds": "curate.synth.recipe",
    "load_synth_recipe": "curate.synth.recipe",
    "default_paths": "curate.synth.stage",
    "review_path": "curate.synth.stage",
    "stop_message": "curate.synth.stage",
    "synthesize": "curate.synth.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
