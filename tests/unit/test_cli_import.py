"""`graylane import FILE...` as a user runs it: policies on stdout or in a file, the notes on stderr and in the
file's header, and the result accepted by `graylane validate`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from functions.cli import main

FIXTURES = Path(__file__).resolve().parent / "import_fixtures"
SEED = str(FIXTURES / "argo" / "seed-002.yaml")


def test_import_writes_policies_that_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policies.yaml"
    files = [
        SEED,
        str(FIXTURES / "argo" / "header-route.yaml"),
        str(FIXTURES / "flagger" / "nginx-canary.yaml"),
    ]
    assert main(["import", *files, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "wrote 3 policies" in err
    assert f"{SEED}: Rollout default/canary-demo: AnalysisTemplate success-rate" in err
    text = out.read_text()
    assert text.startswith(f"# Imported by `graylane import` from Rollout default/canary-demo ({SEED}).")
    assert "# Not expressed, or expressed differently:" in text
    docs = list(yaml.safe_load_all(text))
    assert [d["metadata"]["name"] for d in docs] == ["canary-demo", "rollouts-demo", "podinfo"]
    assert main(["validate", str(out)]) == 0
    assert capsys.readouterr().out.count("OK ") == 3


def test_import_to_stdout_and_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(Path(SEED).read_text()))
    assert main(["import", "-"]) == 0
    [doc] = list(yaml.safe_load_all(capsys.readouterr().out))
    assert doc["spec"]["analysis"]["startStep"] == 2
    query = doc["spec"]["analysis"]["metrics"][0]["query"]
    assert query.startswith("sum(\n") and 'ingress="canary-demo"' in query  # kept as a block


def test_import_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml: cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed")
    assert main(["import", str(bad)]) == 1
    assert "bad.yaml: cannot read" in capsys.readouterr().err
    other = tmp_path / "service.yaml"
    other.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n")
    assert main(["import", str(other)]) == 1
    assert "no Argo Rollouts Rollout or Flagger Canary to import" in capsys.readouterr().err
    assert main(["import"]) == 2
