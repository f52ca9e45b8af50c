"""The Ray engine on a real local multi-node Ray cluster: the same outputs as the local engine.

One cluster for the module: a head and a second node of 1 CPU each (ray.cluster_utils.Cluster), bound to
127.0.0.1, so every stage's work is spread over two Ray nodes and their actors. Blocks are made small so
that even the small real files are cut into many and the actors, not the driver, convert and check them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.engine import use
from tests.test_runner import project  # noqa: F401  (the fixture: a recipe over the demo data)

# every real file is used; this one is also checked with tokens (JSON arrays are read in the driver on either
# engine, and their batches checked on the actors)
JSONL = ["openai__openai-cookbook__toy_chat_fine_tuning.jsonl"]


@pytest.fixture
def small_blocks(monkeypatch):
    from curate.ingest import blocks

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 16 << 10)
    monkeypatch.setattr(blocks, "POOL_BLOCKS", 2)


def _corpus(path: Path, n: int, seed: int = 0) -> list[str]:
    """n chat records as JSONL, ~30 Zipf words each; a fifth are copies of an earlier record with 0-20% of the
    words changed (near duplicates around the 0.8 threshold), a few exact. The texts, in order."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(20_000)])
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(p / p.sum())
    words = np.minimum(np.searchsorted(cdf, rng.random(n * 30)), len(vocab) - 1).reshape(n, 30)
    copy = rng.random(n) < 0.2
    copy[0] = False
    for i in np.flatnonzero(copy):
        words[i] = words[int(rng.integers(0, i))]
        change = rng.random(30) < rng.choice([0.0, 0.02, 0.05, 0.1, 0.2])
        words[i, change] = rng.integers(0, len(vocab), int(change.sum()))
    texts = [" ".join(vocab[w]) for w in words]
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"messages": [{"role": "user", "content": t},
                                             {"role": "assistant", "content": f"reply {i % 97}"}]}) + "\n")
        f.write('{"messages": [{"role": "user", "content": "cut"\n')  # a bad line: a reject with its line number
    return texts


def _tables_equal(a: str | Path, b: str | Path) -> bool:
    return pq.read_table(a).equals(pq.read_table(b))


@pytest.mark.slow
def test_ingest_on_ray_equals_local(cluster, shared_data, tmp_path, small_blocks):
    from curate.ingest import ingest

    files = sorted(f for f in shared_data.iterdir() if f.suffix in (".json", ".jsonl"))
    _corpus(tmp_path / "gen.jsonl", 3_000)
    files.append(tmp_path / "gen.jsonl")
    local = ingest(files, tmp_path / "local.parquet", workers=2)
    with use("ray"):
        remote = ingest(files, tmp_path / "ray.parquet", workers=2)
    assert local.counts == remote.counts and local.counts["rejected"] >= 1
    assert _tables_equal(tmp_path / "local.parquet", tmp_path / "ray.parquet")
    assert (tmp_path / "local.rejects.jsonl").read_text() == (tmp_path / "ray.rejects.jsonl").read_text()


@pytest.mark.slow
def test_validate_on_ray_equals_local(cluster, shared_data, tmp_path, small_blocks, monkeypatch):
    """Outputs equal to the local engine's, the valid file byte for byte: on Ray the rows stay in the object
    store and the actors make and encode the valid parts (validate.stage.encode_valid), which the driver appends."""
    from curate import stitch
    from curate.validate import validate

    sent = []
    submit = stitch.Offload.submit
    monkeypatch.setattr(stitch.Offload, "submit", lambda self, fn, item: (sent.append(fn.__name__),
                                                                           submit(self, fn, item)))

    sources = [shared_data / JSONL[0]] + sorted(f for f in shared_data.iterdir()
                                                if f.suffix in (".json", ".jsonl") and f.name != JSONL[0])
    _corpus(tmp_path / "gen.jsonl", 2_000)
    sources.append(tmp_path / "gen.jsonl")
    for i, src in enumerate(sources):
        settings = {"tokenizer": "embedded", "max_tokens": 64} if i == 0 else {"tokens": False}
        local = validate(src, tmp_path / f"v{i}.parquet", quarantine=tmp_path / f"q{i}.parquet", workers=2, **settings)
        with use("ray"):
            remote = validate(src, tmp_path / f"rv{i}.parquet", quarantine=tmp_path / f"rq{i}.parquet", workers=2,
                              **settings)
        assert local.counts == remote.counts, src.name
        assert _tables_equal(tmp_path / f"v{i}.parquet", tmp_path / f"rv{i}.parquet"), src.name
        assert (tmp_path / f"v{i}.parquet").read_bytes() == (tmp_path / f"rv{i}.parquet").read_bytes(), src.name
        assert _tables_equal(tmp_path / f"q{i}.parquet", tmp_path / f"rq{i}.parquet"), src.name
        drop = ("config", "outputs")
        assert {k: v for k, v in local.to_dict().items() if k not in drop} == \
            {k: v for k, v in remote.to_dict().items() if k not in drop}, src.name
    assert sent.count("encode_valid") > 10  # the Ray runs' valid parts (the local runs' go by encode_spilled)


def test_report_feature_pass_on_ray_equals_local(cluster, shared_data, tmp_path, monkeypatch):
    """The token lengths of report's feature pass counted on the cluster's actors (Code Alpaca's 2,017 records are
    two batches): the same report document as counted in this process."""
    from curate.report import report

    train = shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json"
    prod = shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"
    local = report(train, prod, embedder="tfidf", workers=1).to_dict()["report"]
    import curate.engine

    engines = []
    real_make = curate.engine.make

    def spy(*args, **kwargs):
        engines.append(real_make(*args, **kwargs))
        return engines[-1]

    monkeypatch.setattr(curate.engine, "make", spy)
    with use("ray"):
        remote = report(train, prod, embedder="tfidf", workers=2).to_dict()["report"]
    assert [type(e).__name__ for e in engines] == ["RayEngine"]  # production's two batches went to the actors
    assert remote == local


@pytest.mark.slow
def test_dedupe_on_ray_equals_local_on_200k_planted_records(cluster, tmp_path):
    """200,000 records with planted near-duplicates and an eval set that leaked: kept, removed, clusters and the
    decontamination are the local engine's, row for row."""
    from curate.dedupe import dedupe
    from curate.ingest import ingest

    texts = _corpus(tmp_path / "big.jsonl", 200_000)
    ingest([tmp_path / "big.jsonl"], tmp_path / "big.parquet")
    with open(tmp_path / "eval.jsonl", "w") as f:  # eval items, three of them leaked into the training data
        f.writelines(json.dumps({"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "x"}]})
                    + "\n" for t in [texts[10], texts[5_000], texts[150_000], "an eval question nobody trained on at all"])
    local = dedupe(tmp_path / "big.parquet", tmp_path / "local" / "kept.parquet", against=[tmp_path / "eval.jsonl"],
                   workers=2, batch_size=10_000)
    with use("ray"):
        remote = dedupe(tmp_path / "big.parquet", tmp_path / "ray" / "kept.parquet",
                        against=[tmp_path / "eval.jsonl"], workers=2, batch_size=10_000)
    assert local.counts == remote.counts and local.counts["rejected"] > 10_000
    assert local.summary["contaminated_eval_items"] == remote.summary["contaminated_eval_items"] == 3
    for k in ("kept", "removed", "clusters"):
        assert _tables_equal(local.outputs[k], remote.outputs[k]), k


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_its_batch_retried(cluster, tmp_path):
    """An actor process that dies mid-batch (os._exit, as a lost node does) is restarted by Ray and the batch
    retried there: every result arrives, in order."""
    import sys

    import ray

    from curate.ray_engine import RayEngine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "died"
    with use("ray"), RayEngine(2, _setup, (str(marker),)) as engine:
        got = list(engine.map(_square_or_die, range(12)))
    assert got == [i * i for i in range(12)]
    assert marker.exists()  # it did die once


def _setup(marker: str) -> str:
    return marker


def _square_or_die(marker: str, i: int) -> int:
    if i == 5 and not os.path.exists(marker):
        Path(marker).write_text("x")
        os._exit(1)
    return i * i


def test_without_ray_the_engine_fails_before_any_work_with_what_to_install(tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from curate.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    src = tmp_path / "a.jsonl"
    src.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    res = CliRunner().invoke(cli, ["ingest", str(src), "-o", str(tmp_path / "o.parquet"), "--engine", "ray"])
    assert res.exit_code == 2
    assert "pip install 'curate-ft[ray]'" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.parquet").exists()


def test_a_recipe_cannot_send_the_data_to_a_cluster_it_chooses(tmp_path):
    from curate.pipeline.checks import RecipeRefused, preflight

    (tmp_path / "t.jsonl").write_text("{}\n")
    recipe = {"name": "r", "data": {"train": ["t.jsonl"]}, "engine": {"kind": "ray", "address": "10.0.0.9:6379"}}
    with pytest.raises(RecipeRefused, match="engine.address.*--ray-address 10.0.0.9:6379"):
        preflight(recipe, tmp_path / "r.yaml", stages=("ingest",), workdir=tmp_path / "w")
    preflight(recipe, tmp_path / "r.yaml", stages=("ingest",), workdir=tmp_path / "w", ray_address="10.0.0.9:6379")
    preflight(recipe, tmp_path / "r.yaml", stages=("ingest",), workdir=tmp_path / "w", trust=True)


def test_the_run_recipe_schema_takes_an_engine_section():
    from curate.pipeline.recipe import RunRecipe

    r = RunRecipe.model_validate({"name": "r", "data": {"train": ["t.jsonl"]}, "engine": {"kind": "ray"}})
    assert (r.engine.kind, r.engine.address) == ("ray", None)


@pytest.mark.slow
def test_a_run_keeps_its_finished_stages_across_engines(cluster, project, small_blocks):
    """The engine changes no output, so it is no part of a stage's key: a run started locally resumes on Ray
    without redoing a stage, and a stage forced to rerun on Ray writes the same rows."""
    import pyarrow.parquet as pq

    from curate.pipeline import run_recipe
    from tests.test_runner import DATA_STAGES, statuses

    first = run_recipe("r.yaml")
    dataset = pq.read_table(first["final_dataset"])
    again = run_recipe("r.yaml", engine="ray")
    assert {k: v for k, v in statuses(again).items() if k in DATA_STAGES} == dict.fromkeys(DATA_STAGES, "cached")
    forced = run_recipe("r.yaml", engine="ray", force=["ingest", "validate", "dedupe"])
    assert statuses(forced)["ingest"] != "cached"
    assert pq.read_table(forced["final_dataset"]).equals(dataset)


HOLD = """
import sys
from ray._private import ray_constants
from ray.cluster_utils import Cluster

ray_constants.ENABLE_RAY_CLUSTER = False
c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                  "include_dashboard": False})
print(c.address, flush=True)
sys.stdin.read()  # until the test closes it
c.shutdown()
"""


@pytest.mark.slow
def test_without_an_address_a_new_local_instance_starts_beside_a_running_one(tmp_path):
    """`--engine ray` without --ray-address starts its own local instance, also where another Ray instance runs
    on this machine (another user's, a test's) and RAY_ADDRESS names it: ray.init() would join that one, and
    then refuse the CPU count ("When connecting to an existing cluster, num_cpus and num_gpus must not be
    provided"), as a benchmark run beside the test suite did."""
    import subprocess
    import sys

    pytest.importorskip("ray")
    holder = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = holder.stdout.readline().strip()
        assert address
        src = tmp_path / "a.jsonl"
        src.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q {i}"},
                                                         {"role": "assistant", "content": f"a {i}"}]}) + "\n"
                               for i in range(50)))
        env = {**os.environ, "RAY_ADDRESS": address}
        got = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(src), "-o", str(tmp_path / "o.parquet"),
                              "--engine", "ray", "--workers", "1"], env=env, capture_output=True, text=True, timeout=300,
                             check=False)
        assert got.returncode == 0, got.stderr
        assert pq.read_table(tmp_path / "o.parquet").num_rows == 50
    finally:
        holder.stdin.close()
        holder.wait(timeout=120)
