"""The run recipe as a typed model: every stage's section is that stage's config, checked before anything runs.

`load_run_recipe(path)` parses the YAML (keeping line numbers), validates the whole recipe at once,
an inline or referenced synth recipe included (templates compiled, grounding documents found), and
raises one RecipeError listing every problem with its key, line and, for an unknown key, the
closest known one. schemas/run-recipe.schema.json is generated from this model
(`python -m curate.pipeline.recipe > schemas/run-recipe.schema.json`; a test keeps it equal).
"""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from curate.config import Opt, StageConfig, describe, option_of, section_schema
from curate.dedupe.config import DedupeConfig
from curate.errors import CurateError, RecipeError
from curate.evaluation.config import EvalConfig
from curate.recipe import line_of, load_yaml
from curate.report.config import ReportConfig
from curate.score.config import ScoreConfig
from curate.synth.config import SynthConfig
from curate.train.config import TrainConfig
from curate.validate.config import ValidateConfig

StageName = Literal["ingest", "validate", "dedupe", "score", "report", "synth", "synth_validate", "final",
                    "final_report", "train_raw", "train", "eval"]
STAGE_NAMES: tuple[str, ...] = typing.get_args(StageName)
SECTIONS: dict[str, type[StageConfig]] = {"validate": ValidateConfig, "dedupe": DedupeConfig, "score": ScoreConfig,
                                          "report": ReportConfig, "synth": SynthConfig, "train": TrainConfig,
                                          "eval": EvalConfig}


class TrainSource(BaseModel):
    """A training file with its share of the mix: a relative `weight`, or an exact `count` of rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(description="The file, relative to the recipe.")
    weight: float | None = Field(None, gt=0, description="Relative share of the training rows drawn from this file.")
    count: int | None = Field(None, ge=1, description="Exactly this many training rows drawn from this file (with "
                                                     "repeats when it has fewer).")

    @model_validator(mode="after")
    def _one(self) -> TrainSource:
        if self.weight is not None and self.count is not None:
            raise ValueError("give weight or count, not both")
        return self


class DataConfig(BaseModel):
    """The files a run starts from, in any format `curate ingest` reads; paths relative to the recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    train: Annotated[list[str | TrainSource], Opt(kind="files")] = Field(
        min_length=1, description="Training data: paths, or {path, weight} / {path, count} to mix the files in given "
                                  "shares (README: Mixing).")
    production: Annotated[list[str], Opt(kind="files")] = Field([], description="Samples of production requests.")
    eval: Annotated[list[str], Opt(kind="files")] = Field([], description="Held-out evaluation data.")
    train_origin: str = Field("seed", description="The origin recorded on training rows.")

    @model_validator(mode="after")
    def _mix_kinds(self) -> DataConfig:
        kinds = {("weight" if s.weight is not None else "count" if s.count is not None else None)
                 for s in self.train if isinstance(s, TrainSource)} - {None}
        if len(kinds) > 1:
            raise ValueError("data.train: give every file a weight or every file a count, not some of each")
        return self

    def files(self, role: str) -> list[str]:
        """The paths of a role's files."""
        return [s.path if isinstance(s, TrainSource) else s for s in getattr(self, role)]

    def mix(self) -> dict[str, dict[str, float]] | None:
        """{path: {"weight": w} or {"count": n}} of the training files a recipe gives a share, or None."""
        out = {s.path: ({"weight": s.weight} if s.weight is not None else {"count": s.count})
               for s in self.train if isinstance(s, TrainSource) and (s.weight is not None or s.count is not None)}
        return out or None


TargetMetric = Literal["task_accuracy", "format_rate", "similarity"]


class LoopConfig(BaseModel):
    """How the loop proves itself: the raw-versus-curated comparison, and rounds that feed failures back."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    compare_raw: bool = Field(True, description="Also train an adapter on the data as ingested (same settings) and "
                                                "evaluate base, raw and curated on the same held-out set.")
    rounds: int = Field(1, ge=1, le=10, description="Rounds: after each eval, the curated adapter's failures seed "
                                                    "synth, and the adapter is trained again on the grown dataset.")
    target: dict[TargetMetric, Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None, description="Stop before the last round once the curated adapter reaches every one of these.")


class EngineConfig(BaseModel):
    """Where the data stages run: this machine's processes, or a Ray cluster. Outputs are the same on either."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local", "ray"] = Field("local", description="local: processes of this machine; ray: the actors "
                                                               "of a Ray cluster (pip install 'curate-ft[ray]').")
    address: str | None = Field(None, description="With kind ray: the cluster to join (auto, HOST:PORT, "
                                                  "ray://HOST:PORT); default: a local Ray instance on 127.0.0.1. "
                                                  "A recipe's address needs --ray-address or --trust-recipe.")


class RunRecipe(BaseModel):
    """One YAML file for `curate run`: data in, each stage's settings, stages to skip."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="curate run recipe")
    name: str = Field(description="A plain name (letters, digits, '.', '_', '-'; not '.' or '..'): the work "
                                  "folder defaults to runs/NAME.")
    description: str | None = None
    workdir: Annotated[str | None, Opt(kind="writes")] = Field(
        None, description="Where outputs go, relative to the current directory (`curate run --workdir` overrides).")
    data: DataConfig
    validate_: ValidateConfig | None = Field(None, alias="validate")
    dedupe: DedupeConfig | None = None
    score: ScoreConfig | None = None
    report: ReportConfig | None = None
    synth: SynthConfig | None = None
    train: TrainConfig | None = None
    eval: EvalConfig | None = None
    loop: LoopConfig = LoopConfig()
    engine: EngineConfig = EngineConfig()
    skip: list[StageName] = Field([], description="Stages not to run (their input passes through).")

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        if value in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise PydanticCustomError("plain_name", "not a plain name; it names the work folder runs/NAME")
        return value

    def section(self, name: str) -> StageConfig | None:
        """A stage's settings as the recipe gives them (None when the recipe has no such section)."""
        return getattr(self, "validate_" if name == "validate" else name)


def load_run_recipe(path: str | Path) -> tuple[RunRecipe, dict[str, Any]]:
    """(the validated recipe, its raw YAML data with line numbers); every problem raised at once."""
    path = Path(path)
    data = load_yaml(path)
    problems = _not_for_recipes(data)
    try:
        recipe = RunRecipe.model_validate(data)
    except ValidationError as exc:
        problems += describe(RunRecipe, exc, line_of=lambda loc: line_of(data, list(loc)))
    if problems:
        raise RecipeError(problems, str(path))
    return recipe, data


def _not_for_recipes(data: dict[str, Any]) -> list[str]:
    """Settings a stage has but a run recipe may not set (Opt(recipe=False)), e.g. dedupe's index."""
    out = []
    for section, config in SECTIONS.items():
        values = data.get(section)
        for key in values if isinstance(values, dict) else ():
            info = config.model_fields.get(key)
            if info is not None and not option_of(info).recipe:
                out.append(f"{section}.{key} (line {line_of(data, [section, key])}): a command-line setting of "
                           f"`curate {section}`, not one for `curate run` recipes")
    return out


def check_synth_recipe(data: dict[str, Any], path: Path, trust: bool) -> None:
    """An inline or referenced synth recipe, validated before any stage: templates compiled, documents found.

    Call it after the recipe's paths passed curate/pipeline/checks.py, which reports a missing file.
    """
    from curate.synth.recipe import load_synth_recipe

    recipe = (data.get("synth") or {}).get("recipe")
    if recipe is None:
        return
    try:
        load_synth_recipe(recipe if isinstance(recipe, dict) else path.parent / recipe, path.parent, trust=trust)
    except RecipeError:
        raise
    except CurateError as exc:
        raise RecipeError([f"synth.recipe (line {line_of(data, ['synth', 'recipe'])}): {exc}"], str(path)) from exc


def schema() -> dict[str, Any]:
    """The JSON Schema of a run recipe, from the model (what schemas/run-recipe.schema.json holds)."""
    doc = section_schema(RunRecipe)
    props = doc["properties"]
    props["validate"] = props.pop("validate_", None) or props.pop("validate")
    order = ["name", "description", "workdir", "data", *SECTIONS, "loop", "skip"]
    doc["properties"] = {k: props[k] for k in order}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "run-recipe.schema.json", **doc}


if __name__ == "__main__":
    json.dump(schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
