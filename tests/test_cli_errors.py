"""With --json, a failed command still prints one JSON document on stdout, beside the `Error:` line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from curate.cli import cli


@pytest.mark.parametrize("args, code, needle", [
    (["validate", "missing.jsonl", "--json"], 2, "no such file: missing.jsonl"),  # curate's own usage error
    (["dedupe", "missing.jsonl", "--bogus", "--json"], 2, "No such option '--bogus'"),  # click's
    (["report", "--json"], 2, "give a training set, --production, or both"),
])
def test_json_error_object(tmp_path, monkeypatch, args, code, needle):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == code
    doc = json.loads(res.stdout)
    assert doc == {"error": doc["error"], "exit_code": code, "kind": "usage"} and needle in doc["error"]
    assert needle in res.stderr  # the one-line error for people is still there


def test_without_json_nothing_on_stdout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["validate", "missing.jsonl"])
    assert res.exit_code == 2 and res.stdout == "" and "Error: no such file" in res.stderr
