"""Outputs follow the user's umask like any other tool's files (issue 23 found them written 0600)."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from curate.cli import cli

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


def test_stage_outputs_follow_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o027)  # a stricter umask than the usual 022 makes the difference visible
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["ingest", str(DEMO / "train.jsonl"), "-o", "t.parquet"]).exit_code == 0
        assert runner.invoke(cli, ["validate", "t.parquet", "--no-tokens", "-o", "v.parquet",
                                   "--max-error-rate", "1"]).exit_code == 0
        assert runner.invoke(cli, ["dedupe", "v.parquet", "-o", "d.parquet"]).exit_code == 0
        assert runner.invoke(cli, ["report", "d.parquet", "--production", str(DEMO / "production.jsonl"),
                                   "--embedder", "tfidf", "-o", "r.html", "--gaps", "g.parquet"]).exit_code == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir() if p.is_file()}
    assert {"t.parquet", "v.parquet", "v.quarantine.parquet", "d.parquet", "r.html", "g.parquet"} <= set(modes)
    assert set(modes.values()) == {0o640}, modes
