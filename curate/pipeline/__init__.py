"""`curate run RECIPE`: the whole loop from one YAML recipe, resumable, with a manifest and a dataset card.

    from curate.pipeline import run_recipe
    manifest = run_recipe("recipes/demo.yaml")

    recipe.py   the run recipe as a typed model: every stage's section is that stage's config
    checks.py   what a recipe may read, where it may write, which key synth sends (before any stage)
    workdir.py  the work folder's ledger: curate replaces only what it wrote
    stages.py   the run as data: one Spec per stage (settings, artifacts read and made, the library call)
    runner.py   content-hashed skipping, stage folders finished by stage.json, the manifest
    card.py     DATASET_CARD.md from the stages' outcomes
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {"run_recipe": "curate.pipeline.run", "STAGE_NAMES": "curate.pipeline.stages"}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
