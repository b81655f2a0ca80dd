"""`graylane validate`: output, exit codes, and the installed entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from functions.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "infra" / "examples").glob("*.yaml"))
VALID = """\
apiVersion: graylane.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: web, namespace: shop}
spec:
  image: {repository: registry.example.com/shop/web}
  router: {provider: recording}
  stages:
    - canary: {steps: [{weight: 10}, {weight: 50}]}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate_is_registered_in_the_command_table() -> None:
    assert "validate" in COMMANDS
    assert COMMANDS["validate"].help


def test_valid_examples_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, EXAMPLES)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"OK {ROOT / 'infra/examples/traefik-pipeline.yaml'} (pro/flask: 8 stages)" in out.splitlines()
    assert len(out.splitlines()) == len(EXAMPLES)


def test_valid_file_counts_the_implicit_promote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "web.yaml", VALID)
    assert main(["validate", path]) == 0
    assert capsys.readouterr().out == f"OK {path} (shop/web: 2 stages)\n"


def test_every_problem_is_printed_with_file_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = VALID.replace("{weight: 50}", "{weight: 150}").replace("recording", "envoy")
    path = write(tmp_path, "bad.yaml", bad)
    assert main(["validate", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: spec.stages[0].canary.steps[1].weight: 150 is not allowed; expected an integer 0..100",
        f'{path}: spec.router.provider: "envoy" is not allowed; expected one of traefik, istio, gateway-api, '
        "nginx, haproxy, recording",
    ]


def test_one_bad_file_among_good_ones_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.yaml", VALID)
    bad = write(tmp_path, "bad.yaml", VALID.replace("ReleasePolicy", "Rollout"))
    assert main(["validate", good, bad]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"OK {good}")
    assert err == f'{bad}: kind: "Rollout" is not allowed; expected ReleasePolicy\n'


def test_missing_file_exits_1_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["validate", missing]) == 1
    assert capsys.readouterr().err == f"{missing}: cannot read: No such file or directory\n"


def test_invalid_yaml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "broken.yaml", "apiVersion: x\nspec: [unclosed\n")
    assert main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: line ")
    assert "invalid YAML" in err


def test_multi_document_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = VALID.replace("name: web", "name: api")
    path = write(tmp_path, "both.yaml", VALID + "---\n" + other)
    assert main(["validate", path]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"OK {path} (shop/web: 2 stages)",
        f"OK {path} (shop/api: 2 stages)",
    ]
    broken = write(tmp_path, "broken.yaml", VALID + "---\n" + other.replace("weight: 10", "weight: -1"))
    assert main(["validate", broken]) == 1
    assert capsys.readouterr().err.startswith(
        f"{broken}: documents[1].spec.stages[0].canary.steps[0].weight: -1 "
    )


def test_empty_file_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert main(["validate", path]) == 1
    assert "no policy found" in capsys.readouterr().err


def test_same_app_in_two_files_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = write(tmp_path, "a.yaml", VALID), write(tmp_path, "b.yaml", VALID)
    assert main(["validate", first, second]) == 1
    assert capsys.readouterr().err == f"{second}: metadata.name: shop/web is already declared by {first}\n"


def test_directory_argument_validates_its_yaml_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "web.yaml", VALID)
    write(tmp_path, "notes.txt", "not a policy")
    assert main(["validate", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"OK {tmp_path / 'web.yaml'} (shop/web: 2 stages)\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 1


@pytest.mark.parametrize("argv", [[], ["validate"], ["frobnicate"], ["validate", "--bogus", "x.yaml"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: graylane" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "validate" in capsys.readouterr().out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", VALID.replace("weight: 10", "weight: 101"))
    done = subprocess.run(
        [sys.executable, "-m", "functions.cli", "validate", str(EXAMPLES[0]), bad],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout.startswith(f"OK {EXAMPLES[0]}")
    assert "spec.stages[0].canary.steps[0].weight: 101 is not allowed" in done.stderr
    assert "Traceback" not in done.stderr


def test_console_script_when_installed() -> None:
    script = Path(sys.executable).with_name("graylane")
    assert script.exists(), "run `pip install -e . --no-deps` to install the graylane console script"
    done = subprocess.run(
        [str(script), "validate", *map(str, EXAMPLES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("OK ") == len(EXAMPLES)


def test_help_does_not_import_the_policy_machinery() -> None:
    # functions.core.values (the @value decorator, no model) is allowed: the CLI's own records use it
    code = (
        "import sys; from functions.cli import main; main(['--help']); "
        "print(sorted(m for m in sys.modules if m.startswith(('yaml', 'functions.core.', 'functions.policies'))"
        " and m != 'functions.core.values'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_live_without_a_reachable_cluster_exits_3_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """validate --live reads each policy's objects in its cluster; no kubeconfig to reach one is exit 3 (the
    file itself is valid: OK is printed first). Offline validate never reads a cluster."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = write(tmp_path, "web.yaml", VALID)
    assert main(["validate", path]) == 0
    capsys.readouterr()
    assert main(["validate", "--live", path]) == 3
    out, err = capsys.readouterr()
    assert out == f"OK {path} (shop/web: 2 stages)\n"
    assert err.startswith(f"{path} (shop/web, router recording): cannot reach the cluster: "), err
