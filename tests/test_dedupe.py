"""curate dedupe on real files and planted tables: exact, near, keys, keep rules, index, CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table
from curate.dedupe import DedupeConfig, dedupe
from curate.errors import UsageError

WORDS = [f"word{i}" for i in range(3000)]


def chat(user: str, assistant: str = "ok", system: str | None = None, origin: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]
    return make_row(msgs, origin=origin)


def text(seed: int, n: int = 80) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, n))


def edit(s: str, every: int) -> str:
    words = s.split()
    return " ".join("CHANGED" if i % every == every - 1 else w for i, w in enumerate(words))


def test_alpaca_demo_fourteen_exact_duplicates(shared_data, tmp_path):
    out = tmp_path / "clean.parquet"
    r = dedupe(shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json", out)
    assert r.counts == {"in": 999, "kept": 985, "rejected": 14} and r.kept is None and r.rejected is None
    assert r.summary["reasons"] == {"exact": 14, "near": 0, "contaminated": 0}
    assert r.outputs == {k: str(tmp_path / f"clean{s}") for k, s in (
        ("kept", ".parquet"), ("removed", ".removed.parquet"), ("clusters", ".clusters.parquet"), ("summary", ".dedupe.json"))}
    removed = pq.read_table(tmp_path / "clean.removed.parquet").to_pylist()
    assert len(removed) == 14 and pq.read_table(out).num_rows == 985
    for row in removed:
        # identical records share a content id; the kept copy is the earlier one
        assert row["dedupe_reason"] == "exact" and row["dedupe_duplicate_of"] == row["id"]
        assert row["dedupe_duplicate_row"] < row["source"]["row"] - 1  # source.row counts from 1
    clusters = pq.read_table(tmp_path / "clean.clusters.parquet")
    assert sum(len(m) for m in clusters.column("member_ids").to_pylist()) == 14
    assert clusters.equals(r.clusters)
    # the summary file is the same document as --json: the outcome's to_dict()
    assert json.loads((tmp_path / "clean.dedupe.json").read_text()) == json.loads(json.dumps(r.to_dict()))


def test_lima_has_no_near_duplicates(shared_data):
    r = dedupe(shared_data / "hiyouga__LLaMA-Factory__lima.json", threshold=0.8)
    assert r.counts == {"in": 1029, "kept": 1029, "rejected": 0} and r.clusters.num_rows == 0
    assert r.kept.num_rows == 1029 and r.rejected.num_rows == 0 and r.outputs == {}


@pytest.mark.parametrize("n", [100, 1000, 2500])
def test_chrisjmccormick_pairs_all_found_no_false_pair(shared_data, n):
    names, rows = [], []
    for line in (shared_data / f"chrisjmccormick__MinHash__articles_{n}.train").read_text().splitlines():
        name, body = line.split(" ", 1)
        names.append(name)
        rows.append(chat(body))
    truth = {
        tuple(sorted(line.split()))
        for line in (shared_data / f"chrisjmccormick__MinHash__articles_{n}.truth").read_text().splitlines()
        if line.strip()
    }
    r = dedupe(rows_to_table(rows))
    found = set()
    for c in r.clusters.to_pylist():
        for m, j in zip(c["member_rows"], c["jaccard"]):
            found.add(tuple(sorted((names[c["kept_row"]], names[m]))))
            assert j >= 0.8
    assert found == truth


def test_planted_near_duplicates_verified_and_explained():
    base = [text(i) for i in range(40)]
    rows = [chat(t) for t in base] + [chat(edit(base[i], 40)) for i in range(10)] + [chat(edit(base[20], 3))]
    r = dedupe(rows_to_table(rows), threshold=0.8)
    assert r.counts == {"in": 51, "kept": 41, "rejected": 10}
    removed = r.rejected.to_pylist()
    assert sorted(x["dedupe_duplicate_row"] for x in removed) == list(range(10))
    for x in removed:
        assert x["dedupe_reason"] == "near" and 0.8 <= x["dedupe_jaccard"] < 1.0
        assert abs(x["dedupe_jaccard_est"] - x["dedupe_jaccard"]) < 0.2
        assert x["dedupe_duplicate_of"] == rows[x["dedupe_duplicate_row"]]["id"]
    # the heavily edited copy of row 20 is far below the threshold and stays
    assert r.kept.num_rows == 41


def test_unverified_mode_uses_estimates():
    base = [text(i) for i in range(10)]
    rows = [chat(t) for t in base] + [chat(edit(base[0], 40))]
    r = dedupe(rows_to_table(rows), verify=False)
    assert r.counts["rejected"] == 1 and r.summary["config"]["verify"] is False
    assert r.rejected.column("dedupe_jaccard").to_pylist() == [None]
    assert "not verified" in r.rejected.column("dedupe_evidence").to_pylist()[0]


def test_shared_system_prompt_does_not_make_rows_duplicates():
    system = text(999, 200)
    rows = [chat(f"question {i} about topic {i}", f"answer {i}", system=system) for i in range(5)]
    r = dedupe(rows_to_table(rows), on="conversation")
    assert r.counts["rejected"] == 0
    # the same rows with identical user and assistant turns are duplicates despite the prompt
    r2 = dedupe(rows_to_table(rows + [chat("question 1 about topic 1", "answer 1", system=system)]), on="conversation")
    assert r2.counts["rejected"] == 1


@pytest.mark.parametrize(
    "on,removed",
    [("user", 1), ("assistant", 1), ("conversation", 0), ("first-user", 2)],
)
def test_role_aware_keys(on, removed):
    q, a = text(1), text(2)
    rows = [
        chat(q, a),
        chat(q, text(3)),  # same question, other answer
        chat(text(4), a),  # other question, same answer
        make_row([{"role": "user", "content": q}, {"role": "assistant", "content": text(5)},
                  {"role": "user", "content": text(6)}, {"role": "assistant", "content": text(7)}]),
    ]
    r = dedupe(rows_to_table(rows), config=DedupeConfig(on=on))
    assert r.counts["rejected"] == removed


@pytest.mark.parametrize(
    "keep,kept_row",
    [("first", 0), ("longest", 2), ("origin", 1)],
)
def test_keep_rules(keep, kept_row):
    q = text(11)
    rows = [chat(q, origin="synthetic"), chat(q + " !!", origin="production"), chat(q + " extra", origin="seed")]
    r = dedupe(rows_to_table(rows), None, {"keep": keep, "origin_priority": ["production", "seed", "synthetic"]})
    assert r.kept.num_rows == 1
    assert r.kept.column("id").to_pylist() == [rows[kept_row]["id"]]
    assert set(r.rejected.column("dedupe_duplicate_row").to_pylist()) == {kept_row}


def test_incremental_index(tmp_path):
    idx = tmp_path / "index"
    first = [chat(text(i)) for i in range(20)]
    r1 = dedupe(rows_to_table(first), index=idx)
    assert r1.counts["rejected"] == 0 and (idx / "index.json").exists()
    # the file keeps its own key names (rows, not rows_per_band): indexes written before stay readable
    assert json.loads((idx / "index.json").read_text())["config"] == {
        "on": "user", "shingle": "word", "ngram": 5, "hash": "curate", "num_perm": 128, "seed": 1, "bands": 21, "rows": 6}
    second = [chat(text(100)), chat(text(3)), chat(edit(text(5), 50)), chat(text(101))]
    r2 = dedupe(rows_to_table(second), index=idx)
    assert r2.summary["index_rows_before"] == 20
    removed = {x["dedupe_duplicate_of"]: x for x in r2.rejected.to_pylist()}
    assert set(removed) == {first[3]["id"], first[5]["id"]}
    assert all(x["dedupe_duplicate_row"] is None for x in removed.values())
    assert removed[first[3]["id"]]["dedupe_reason"] == "exact"
    assert removed[first[5]["id"]]["dedupe_jaccard"] >= 0.8
    # the two new rows joined the index: a third batch sees them
    r3 = dedupe(rows_to_table([chat(text(101))]), index=idx)
    assert r3.summary["index_rows_before"] == 22 and r3.counts["rejected"] == 1
    with pytest.raises(UsageError, match="ngram"):
        dedupe(rows_to_table(first), index=idx, ngram=3)
    with pytest.raises(UsageError, match=r"rows_per_band=6 \(now 4\)"):
        dedupe(rows_to_table(first), index=idx, bands=21, rows_per_band=4)
    # an index written by an older format (other hashes) is refused, not silently matched against
    manifest = json.loads((idx / "index.json").read_text())
    (idx / "index.json").write_text(json.dumps({**manifest, "version": 1}))
    with pytest.raises(UsageError, match="format version 1"):
        dedupe(rows_to_table(first), index=idx)


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "x.parquet"
    r = dedupe(rows_to_table([chat(text(i)) for i in range(50)]), out, dry_run=True, index=tmp_path / "idx")
    s = r.summary
    assert (s["dry_run"], s["input_rows"], s["sampled_rows"], s["tokens_per_row"]) == (True, 50, 50, 80.0)
    assert isinstance(s["estimated_seconds"], float) and s["estimated_peak_rss_mib"] > 50  # Python + Arrow alone
    assert s["config"]["index"] == str(tmp_path / "idx") and (s["config"]["bands"], s["config"]["rows_per_band"]) == (21, 6)
    assert r.counts == {} and r.outputs == {} and r.to_dict()["balanced"] is True
    assert not any(tmp_path.iterdir())


def test_streams_canonical_parquet_in_batches(tmp_path):
    base = [text(i) for i in range(30)]
    rows = [chat(t) for t in base] + [chat(base[i]) for i in range(0, 30, 3)]
    src = tmp_path / "in.parquet"
    pq.write_table(rows_to_table(rows), src)
    r = dedupe(src, tmp_path / "out.parquet", batch_size=7)
    assert r.counts == {"in": 40, "kept": 30, "rejected": 10}
    kept, removed = pq.read_table(r.outputs["kept"]), pq.read_table(r.outputs["removed"])
    assert (kept.num_rows, removed.num_rows) == (30, 10)
    assert "dedupe_cluster" in kept.schema.names and "dedupe_reason" in removed.schema.names
    # the same rows as one batch of a table in memory
    whole = dedupe(rows_to_table(rows))
    assert whole.kept.equals(kept) and whole.rejected.equals(removed)


def test_cli_exit_codes_and_json(shared_data, tmp_path):
    runner = CliRunner()
    src = str(shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json")
    res = runner.invoke(cli, ["dedupe", src, "-o", str(tmp_path / "o.parquet"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"in": 999, "kept": 985, "rejected": 14} and doc["reasons"]["exact"] == 14
    assert doc == json.loads((tmp_path / "o.dedupe.json").read_text())
    assert runner.invoke(cli, ["dedupe", src]).exit_code == 2
    assert runner.invoke(cli, ["dedupe", src, "-o", str(tmp_path / "p.parquet"), "--on", "everything"]).exit_code == 2
    missing = runner.invoke(cli, ["dedupe", str(tmp_path / "nope.json"), "-o", str(tmp_path / "q.parquet")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    bad = runner.invoke(cli, ["dedupe", src, "-o", str(tmp_path / "r.parquet"), "--threshold", "1.5"])
    assert bad.exit_code == 2 and "threshold" in bad.output
    dry = runner.invoke(cli, ["dedupe", src, "--dry-run", "--json"])
    assert dry.exit_code == 0 and json.loads(dry.stdout)["dry_run"] is True
    shown = runner.invoke(cli, ["dedupe", src, "-o", str(tmp_path / "s.parquet")])
    assert shown.exit_code == 0 and "removed 14" in shown.output and "cluster" in shown.output


def test_identity_punctuation_variants_are_exact_duplicates(shared_data):
    # "你是谁" and "你是谁？" differ only in (full-width) punctuation; "你好" appears twice verbatim
    r = dedupe(shared_data / "hiyouga__LLaMA-Factory__identity.json")
    removed = sorted(r.rejected.column("messages").to_pylist(), key=lambda m: m[0]["content"])
    assert r.summary["reasons"]["exact"] == 3
    assert [m[0]["content"] for m in removed] == ["你好", "你是谁？", "你是谁？"]


@pytest.mark.parametrize("shingle,ngram", [("char", 5), ("word", 3)])
def test_other_shinglings_find_planted_near_duplicates(shingle, ngram):
    base = [text(i) for i in range(20)]
    rows = [chat(t) for t in base] + [chat(edit(base[4], 60))]
    r = dedupe(rows_to_table(rows), shingle=shingle, ngram=ngram)
    assert r.rejected.column("dedupe_duplicate_row").to_pylist() == [4]
    assert r.rejected.column("dedupe_jaccard").to_pylist()[0] >= 0.8


def test_empty_input_and_rows_without_a_key():
    from curate.dataset import empty_table

    assert dedupe(empty_table()).counts == {"in": 0, "kept": 0, "rejected": 0}
    same = rows_to_table([make_row([{"role": "user", "content": "hi"}])] * 2)
    # no assistant turn: nothing to compare, so nothing is removed, and the summary says why
    r = dedupe(same, on="assistant")
    assert r.counts["rejected"] == 0 and r.summary["empty_key_rows"] == 2
    assert dedupe(same).counts["rejected"] == 1


def test_allocator_settings_only_when_asked(monkeypatch, tmp_path):
    """The library leaves the process's allocator settings alone unless asked (tune_allocator=True, as the CLI
    does). When asked, Arrow allocates through the system allocator and numpy asks for no huge pages while
    deciding; both are restored afterwards, also when the run fails, and nested uses keep the setting until the
    outermost one ends."""
    import pyarrow as pa

    from curate.dedupe import alloc, stage

    seen = []
    real_decide = stage.decide

    def watched(*args, **kwargs):
        huge = alloc._set_hugepage(True) if alloc._set_hugepage else None
        if alloc._set_hugepage:
            alloc._set_hugepage(huge)
        seen.append((pa.default_memory_pool().backend_name, huge))
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(stage, "decide", watched)
    hugepage = alloc._set_hugepage(True) if alloc._set_hugepage else None  # numpy's default on Linux
    before = pa.default_memory_pool().backend_name
    assert before != "system"
    rows = rows_to_table([chat(text(1)), chat(text(1))])
    assert dedupe(rows).counts["rejected"] == 1
    assert dedupe(rows, tune_allocator=True).counts["rejected"] == 1
    expect_huge = (True, False) if alloc._set_hugepage else (None, None)
    assert seen == [(before, expect_huge[0]), ("system", expect_huge[1])]
    assert pa.default_memory_pool().backend_name == before
    with pytest.raises(UsageError, match="no such file"):
        dedupe(tmp_path / "missing.parquet", tune_allocator=True)  # fails inside the tuned scope
    assert pa.default_memory_pool().backend_name == before
    with alloc.reuse_freed_memory():
        assert pa.default_memory_pool().backend_name == "system"
        with alloc.reuse_freed_memory():
            pass
        assert pa.default_memory_pool().backend_name == "system"
    assert pa.default_memory_pool().backend_name == before
    if alloc._set_hugepage is not None:
        with alloc.small_pages():
            with alloc.small_pages():
                pass
            assert alloc._set_hugepage(False) is False  # off inside, also after a nested use ended
        assert alloc._set_hugepage(hugepage) is True  # restored after the outermost


def test_settings_have_one_name_in_python_cli_and_recipe():
    """Every DedupeConfig setting is a CLI flag with its range and choices (generated), shown by --help (the semantic
    judge's as --judge flags, as score's); the recipe has all but the two input formats (a recipe's inputs are
    canonical Parquet)."""
    import click

    from curate.cli import JUDGE_FLAGS
    from curate.config import section_schema
    from curate.ingest.config import INPUT_FORMATS

    params = {p.name: p for p in cli.commands["dedupe"].params}
    shown = CliRunner().invoke(cli, ["dedupe", "--help"], terminal_width=200).output
    fields = DedupeConfig.model_fields
    judge = set(JUDGE_FLAGS) - {"judge_samples", "judge_rubric"}  # a pair judge has no rubric to choose
    assert set(params) == {*fields, "input_path", "output", "against", "dry_run", "as_json", "engine", "ray_address",
                           "show_clusters", "cache_dir", *judge} - {"semantic_judge"}
    for name in set(fields) - {"semantic_judge"}:
        flag = "--" + name.replace("_", "-")
        assert params[name].opts == [flag] and f"  {flag}" in shown, name
    assert params["verify"].secondary_opts == ["--no-verify"] and "--rows" not in shown.split()
    t = params["threshold"].type
    assert isinstance(t, click.FloatRange) and (t.min, t.min_open, t.max, t.max_open) == (0, True, 1, False)
    assert (params["num_perm"].type.min, params["ngram"].type.min, params["containment"].type.max) == (2, 1, 1)
    assert params["seed"].type.max == 2**32 and params["seed"].type.max_open
    choices = {name: list(p.type.choices) for name, p in params.items() if isinstance(p.type, click.Choice)}
    assert choices.pop("format") == choices.pop("against_format") == ["auto", "mixed", *INPUT_FORMATS]
    assert choices.pop("engine") == ["local", "ray"]  # where batches run, not a DedupeConfig setting
    assert choices == {"on": ["user", "assistant", "conversation", "first-user"], "shingle": ["word", "char"],
                       "keep": ["first", "longest", "origin"], "hash": ["curate", "sha1"],
                       "semantic_verifier": ["rule", "judge"]}
    assert set(section_schema(DedupeConfig)["properties"]) == set(fields) - {"format", "against_format", "against_field",
                                                                             "index"}


def test_cli_settings_reach_the_config(shared_data, tmp_path):
    src = str(shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json")
    runner = CliRunner()
    res = runner.invoke(cli, ["dedupe", src, "--dry-run", "--json", "--origin-priority", "seed, production",
                              "--bands", "16", "--rows-per-band", "8", "--no-verify", "--index", str(tmp_path / "i"),
                              "--boilerplate-rows", "40", "--seed", "7", "--format", "alpaca"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["config"]
    assert (cfg["origin_priority"], cfg["bands"], cfg["rows_per_band"], cfg["verify"], cfg["index"]) == (
        ["seed", "production"], 16, 8, False, str(tmp_path / "i"))
    assert (cfg["boilerplate_rows"], cfg["seed"], cfg["format"], cfg["threshold"]) == (40, 7, "alpaca", 0.8)
    for args, message in ((["--threshold", "0"], "0<x<=1"), (["--rows-per-band", "6"], "give both bands and rows_per_band"),
                          (["--bands", "30", "--rows-per-band", "6"], "180 exceeds num_perm 128"),
                          (["--num-perm", "1"], "x>=2"), (["--keep", "oldest"], "'oldest' is not one of")):
        res = runner.invoke(cli, ["dedupe", src, "--dry-run", *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)


def test_terminal_output_fits_80_columns(shared_data, tmp_path):
    """One line a cluster by default (previews cut with an ellipsis); --show-clusters N for the side-by-side text."""
    src = str(shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json")
    env = {"COLUMNS": "80"}
    short = CliRunner().invoke(cli, ["dedupe", src, "-o", str(tmp_path / "a.parquet")], env=env)
    assert short.exit_code == 0
    table = [line for line in short.stderr.splitlines() if line.startswith("│")]
    assert len(table) == 5 and all(len(line) <= 80 for line in table) and "…" in short.stderr
    assert "removed" not in " ".join(table)
    full = CliRunner().invoke(cli, ["dedupe", src, "-o", str(tmp_path / "b.parquet"), "--show-clusters", "2"], env=env)
    assert full.exit_code == 0 and full.stderr.count("cluster 7: 3 rows") == 1 and "removed" in full.stderr
