"""Webhook sources by route name. Only this module names the concrete classes."""

from __future__ import annotations

from collections.abc import Iterable

from functions.errors import ConfigError
from functions.providers.sources.alertmanager import AlertmanagerSource
from functions.providers.sources.aliyun import AliyunSource
from functions.providers.sources.azure import AzureSource
from functions.providers.sources.base import Source
from functions.providers.sources.distribution import DistributionSource
from functions.providers.sources.dockerhub import DockerHubSource
from functions.providers.sources.ecr import EcrSource
from functions.providers.sources.gar import GarSource
from functions.providers.sources.generic import GenericSource
from functions.providers.sources.github import GitHubSource
from functions.providers.sources.gitlab import GitLabSource
from functions.providers.sources.harbor import HarborSource
from functions.providers.sources.jfrog import JFrogSource
from functions.providers.sources.quay import QuaySource
from functions.providers.sources.tencent import CodingSource, TcrSource

SOURCES: dict[str, type[Source]] = {
    cls.name: cls
    for cls in (
        DockerHubSource,
        HarborSource,
        GitHubSource,
        GitLabSource,
        DistributionSource,
        QuaySource,
        TcrSource,
        CodingSource,
        AliyunSource,
        EcrSource,
        GarSource,
        AzureSource,
        JFrogSource,
        GenericSource,
        AlertmanagerSource,
    )
}

# Other spellings people will try; each maps to a route name above.
ALIASES = {
    "github": "ghcr",
    "aliyun": "acr",
    "tencent": "tcr",
    "artifactory": "jfrog",
    "registry": "distribution",
}


def make_sources(names: Iterable[str] | None = None) -> dict[str, Source]:
    """One instance per wanted source (all by default); an unknown name raises ConfigError listing the known."""
    wanted = list(SOURCES) if names is None else [ALIASES.get(n, n) for n in names]
    unknown = [n for n in wanted if n not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown webhook source(s) {', '.join(unknown)}; known: {', '.join(SOURCES)}")
    return {name: SOURCES[name]() for name in wanted}
