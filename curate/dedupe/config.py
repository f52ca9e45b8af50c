"""Settings of `curate dedupe` (see curate/config.py for how they become options and the recipe schema)."""

from __future__ import annotations

import os
import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from curate.config import Opt, StageConfig
from curate.dedupe.judge import PairJudgeSettings
from curate.ingest.config import InputFormat  # the formats curate reads, listed once

Key = Literal["user", "assistant", "conversation", "first-user"]
KeepRule = Literal["first", "longest", "origin"]
KEYS: tuple[str, ...] = typing.get_args(Key)
KEEP_RULES: tuple[str, ...] = typing.get_args(KeepRule)


class DedupeConfig(StageConfig):
    """How rows are compared, which duplicate stays, and how eval items are matched."""

    stage: ClassVar[str] = "dedupe"
    on: Key = Field("user", description="Which turns form the compared key: user, assistant, first-user or the whole "
                                        "conversation (system prompts shared by several rows left out).")
    shingle: Literal["word", "char"] = Field("word", description="Shingles of words or of characters.")
    ngram: int = Field(5, ge=1, description="Shingle length in words or characters.")
    num_perm: int = Field(128, ge=2, description="MinHash permutations.")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity at which rows are near duplicates.")
    bands: int | None = Field(None, ge=1, description="LSH bands (default: chosen from the threshold to catch 99% of "
                                                      "pairs at it; give rows_per_band with it).")
    rows_per_band: int | None = Field(None, ge=1, description="LSH rows per band (with bands).")
    keep: KeepRule = Field("first", description="Which row of a cluster stays: the first, the longest key text, or by "
                                                "origin in origin_priority's order.")
    origin_priority: Annotated[list[str], Opt(sep=",", metavar="ORIGINS")] = Field(
        ["production", "seed", "eval", "synthetic"], description="Order of origins for keep=origin, first kept first.")
    # in a recipe the eval set is the ingest stage's canonical Parquet: no format to name
    against_format: Annotated[Literal["auto", "mixed", InputFormat], Opt(recipe=False)] = Field(
        "auto", description="Format of the eval files (--against) when they are not canonical Parquet.")
    against_field: Annotated[list[str], Opt(metavar="NAME", recipe=False)] = Field(
        [], description="Read the eval files (--against) by these text fields (repeatable; e.g. HumanEval's prompt, "
                        "MMLU's question and choices): each string, or list of strings, is one item. Default: "
                        "files of a known format by their user turns, others by every string field.")
    # not in run recipes: the index learns every run's rows, so a rerun of a run's dedupe stage (a changed
    # setting, --force) would find its own rows there and remove them as duplicates of themselves
    index: Annotated[str | None, Opt(kind="writes", metavar="DIR", recipe=False)] = Field(
        None, description="Persistent LSH index folder: dedupe against the rows of earlier runs and add this run's "
                          "kept rows.")
    hash: Literal["curate", "sha1"] = Field(
        "curate", description="Shingle hash: curate's compiled one, or datasketch's default SHA-1 (slower; signatures "
                              "equal a plain datasketch MinHash()).")
    verify: bool = Field(True, description="Check candidate pairs by exact Jaccard (off: trust the MinHash estimates).")
    # in a recipe the input is the earlier stage's canonical Parquet: no format to name
    format: Annotated[Literal["auto", "mixed", InputFormat], Opt(recipe=False)] = Field(
        "auto", description="Format of the input when it is not canonical Parquet.")
    batch_size: int = Field(5_000, ge=1, description="Rows read and hashed at a time.")
    workers: int | None = Field(None, ge=1, description="Threads that hash batches in the signature pass (default: "
                                                        "the cores this process may use); outputs are the same for "
                                                        "any number.")
    seed: int = Field(1, ge=0, lt=2**32, description="MinHash permutation seed (datasketch's seed).")
    long_ngram: int = Field(13, ge=1, description="Decontamination: a shared word n-gram of this length is a match.")
    containment: float = Field(0.7, ge=0, le=1, description="Decontamination: share of an eval item's word trigrams a "
                                                            "row must contain to be a near copy of it.")
    semantic: bool = Field(False, description="After the MinHash pass, also remove paraphrases: kept rows (and, with "
                                              "--against, eval items) whose key texts' embeddings are close and pass "
                                              "the verifier.")
    semantic_threshold: float = Field(0.85, gt=0, le=1, description="Semantic: cosine at which a pair is a candidate.")
    semantic_high: float = Field(0.95, gt=0, le=1, description="Semantic: cosine at which a pair passes without the "
                                                               "verifier (no lexical checks, no judge request).")
    semantic_verify: bool = Field(True, description="Semantic: check candidates below semantic_high with the "
                                                    "verifier (semantic_verifier); off: remove on cosine alone.")
    semantic_verifier: Literal["rule", "judge"] = Field(
        "rule", description="Semantic: the verifier: the lexical rule (numbers and names agree, not one content word "
                            "swapped) or a teacher as judge (semantic_judge; --judge MODEL on the command line).")
    semantic_judge: Annotated[PairJudgeSettings | None, Opt(cli=False)] = Field(
        None, description="Semantic: the teacher that judges candidate pairs with semantic_verifier judge, and the "
                          "limits on what it may send and spend.")
    boilerplate_rows: int | None = Field(None, ge=1, description="Decontamination: n-grams in at least this many rows "
                                                                 "are boilerplate, never evidence (default: max(20, "
                                                                 "0.2% of rows)).")

    @field_validator("index", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _banding(self) -> DedupeConfig:
        from pydantic_core import PydanticCustomError

        if self.semantic_verifier == "judge" and self.semantic_judge is None:
            raise PydanticCustomError("judge", "semantic_verifier judge needs the judge: semantic_judge: {teacher: "
                                               "MODEL} in a recipe, --judge MODEL on the command line")
        if self.semantic_judge is not None and self.semantic_verifier != "judge":
            raise PydanticCustomError("judge", "a judge is given but semantic_verifier is 'rule': set "
                                               "semantic_verifier judge (--semantic-verifier judge) or drop the judge")
        if self.semantic_verifier == "judge" and not self.semantic_verify:
            raise PydanticCustomError("judge", "semantic_verify off removes on cosine alone, with no verifier: drop "
                                               "it or semantic_verifier judge")
        if (self.bands is None) != (self.rows_per_band is None):
            raise PydanticCustomError("banding", "give both bands and rows_per_band, or neither (they are chosen "
                                                 "from the threshold)")
        if self.bands is not None and self.bands * self.rows_per_band > self.num_perm:
            raise PydanticCustomError("banding", "bands x rows_per_band = {product} exceeds num_perm {num_perm}",
                                      {"product": self.bands * self.rows_per_band, "num_perm": self.num_perm})
        return self
