"""kubectl graylane's own part, without a cluster: kubectl's flags anywhere on the line, the namespace an app is
in, the ConfigMap store it reads, and that its commands are the CLI's (one implementation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from functions import cli
from functions.kubectl_plugin import (
    PLUGIN_COMMANDS,
    KubeFlags,
    UsageError,
    Where,
    build_parser,
    qualify,
    split_flags,
    store_url,
    where,
)


def test_flags_anywhere_on_the_line_in_every_spelling() -> None:
    flags, rest = split_flags(
        ["status", "-n", "prod", "web", "--context=c1", "--kubeconfig", "/k", "-o", "json"]
    )
    assert flags == KubeFlags(kubeconfig="/k", context="c1", namespace="prod")
    assert rest == ["status", "web", "-o", "json"]
    assert split_flags(["list", "-nstaging", "-A"])[0] == KubeFlags(namespace="staging", all_namespaces=True)
    assert split_flags(["list", "--namespace=x", "--all-namespaces"])[0] == KubeFlags(
        namespace="x", all_namespaces=True
    )
    assert split_flags(["approve", "web", "--", "-n"])[1] == [
        "approve",
        "web",
        "--",
        "-n",
    ]  # after --: not ours
    with pytest.raises(UsageError, match="needs an argument: --context"):
        split_flags(["status", "web", "--context"])
    with pytest.raises(UsageError, match="non-empty"):
        split_flags(["status", "web", "--namespace="])


def test_an_app_is_in_the_namespace_unless_it_names_one() -> None:
    here = Where(context="c", namespace="prod")
    assert qualify("web", here, False) == "prod/web"
    assert qualify("team/web", here, False) == "team/web"
    assert qualify("prod/web", here, True) == "prod/web"
    with pytest.raises(UsageError, match="names namespace team"):
        qualify("team/web", here, True)


def test_the_store_is_the_contexts_configmaps_in_the_namespace() -> None:
    assert (
        store_url(Where(context="c 1", namespace="prod"), False) == "configmap://?context=c+1&namespaces=prod"
    )
    assert store_url(Where(context="c", namespace="prod"), True) == "configmap://?context=c"
    assert store_url(Where(context="", namespace="prod"), True) == "configmap://"


def test_where_reads_the_current_context_and_its_namespace(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "a",
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "a", "context": {"cluster": "k", "user": "u", "namespace": "team"}},
                    {"name": "b", "context": {"cluster": "k", "user": "u"}},
                ],
            }
        )
    )
    assert where(KubeFlags(kubeconfig=str(config)), {}) == Where("a", "team", str(config))
    assert where(KubeFlags(context="b"), {"KUBECONFIG": str(config)}) == Where("b", "default", str(config))
    assert where(KubeFlags(context="b", namespace="x"), {"KUBECONFIG": str(config)}).namespace == "x"
    with pytest.raises(UsageError, match='context "c" does not exist'):
        where(KubeFlags(kubeconfig=str(config), context="c"), {})


def test_the_commands_are_the_clis_own() -> None:
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    assert list(choices) == list(PLUGIN_COMMANDS)
    assert set(PLUGIN_COMMANDS) <= set(cli.COMMANDS) and not {"serve", "demo", "report"} & set(
        PLUGIN_COMMANDS
    )
    args = parser.parse_args(["approve", "web", "--gate", "promote", "-o", "yaml"])
    assert cli.COMMANDS[args.command].run.__module__ == "functions.cli_release"
    assert (args.app, args.gate, args.output) == ("web", "promote", "yaml")
