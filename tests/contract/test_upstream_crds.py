"""The CRDs the tests install are the pinned upstream files: byte for byte what the Go module zips hold.

Needs the files `make crds` fetched (tests/k8s/upstream_crds.py) and, for the fetch tests, the modules in the
shared Go module cache (`go mod download` answers from it without the network once they are there).
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.cluster import load_crds
from tests.k8s.upstream_crds import (
    CrdMismatch,
    CrdsMissing,
    crd_dir,
    crd_files,
    extract,
    fetch,
    module_zip,
    read_pins,
)


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    loaded = load_crds()
    by_name = {c["metadata"]["name"]: c for c in loaded}
    assert len(by_name) == len(loaded), "a CRD loaded twice"
    return by_name


def _schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_every_pinned_file_in_the_cache_has_its_pinned_sha256() -> None:
    pins = read_pins()
    files = crd_files(pins)
    assert [f.name for f in files] == [p.file for p in pins]
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == [p.sha256 for p in pins]


def test_a_changed_byte_fails_the_load(tmp_path: Path) -> None:
    pins = read_pins()
    for pin in pins:
        shutil.copy(crd_dir(pins) / pin.file, tmp_path / pin.file)
    target = next(p for p in pins if p.file.endswith("httproutes.yaml"))
    edited = (tmp_path / target.file).read_bytes().replace(b"maxItems: 16", b"maxItems: 17", 1)
    (tmp_path / target.file).write_bytes(edited)
    with pytest.raises(
        CrdMismatch, match=f"{target.file} \\(sigs.k8s.io/gateway-api@v1.4.1 .*pinned {target.sha256}"
    ):
        crd_files(pins, tmp_path)
    (tmp_path / target.file).unlink()
    with pytest.raises(CrdsMissing, match=f"{target.file}; run `make crds`"):
        crd_files(pins, tmp_path)


def test_fetch_writes_the_module_bytes_and_refuses_a_wrong_pin(tmp_path: Path) -> None:
    pins = [p for p in read_pins() if p.module == "knative.dev/eventing"]
    fetch(pins, tmp_path / "crds")
    assert crd_files(pins, tmp_path / "crds") == [tmp_path / "crds" / p.file for p in pins]
    wrong = replace(pins[0], sha256="0" * 64)
    with pytest.raises(
        CrdMismatch, match=f"knative.dev/eventing@v0.50.0 {wrong.path}: sha256 {pins[0].sha256}"
    ):
        extract(wrong, module_zip(wrong.module, wrong.version))
    with pytest.raises(CrdMismatch, match="has no config/core/resources/nothing.yaml"):
        extract(
            replace(pins[0], path="config/core/resources/nothing.yaml"),
            module_zip(wrong.module, wrong.version),
        )


def test_the_gateway_api_pins_are_the_whole_standard_channel() -> None:
    pins = [p for p in read_pins() if p.module == "sigs.k8s.io/gateway-api"]
    prefix = f"{pins[0].module}@{pins[0].version}/config/crd/standard/"
    with zipfile.ZipFile(module_zip(pins[0].module, pins[0].version)) as zf:
        standard = sorted(
            n[len(prefix) :] for n in zf.namelist() if n.startswith(prefix) and n.endswith(".yaml")
        )
    assert standard and sorted(p.path.rsplit("/", 1)[1] for p in pins) == standard


def test_load_crds_takes_each_crd_once_traefik_io_from_v3_and_the_legacy_group_from_v2_11(
    crds: dict[str, dict[str, Any]],
) -> None:
    route = "properties.spec.properties.routes.items.properties".split(".")

    def route_fields(name: str) -> dict[str, Any]:
        node = _schema(crds[name], "v1alpha1")
        for key in route:
            node = node[key]
        return node

    assert "syntax" in route_fields("ingressroutes.traefik.io")  # Traefik v3's rule syntax per route
    assert "syntax" not in route_fields("ingressroutes.traefik.containo.us")  # v2.11 has none
    assert {c["spec"]["group"] for c in crds.values()} >= {
        "traefik.io",
        "traefik.containo.us",
        "networking.istio.io",
        "gateway.networking.k8s.io",
        "serving.knative.dev",
        "eventing.knative.dev",
        "sources.knative.dev",
    }


@pytest.mark.parametrize(
    ("name", "storage"),
    [
        ("virtualservices.networking.istio.io", "v1"),
        ("destinationrules.networking.istio.io", "v1"),
        ("httproutes.gateway.networking.k8s.io", "v1"),
        ("ingressroutes.traefik.io", "v1alpha1"),
        ("services.serving.knative.dev", "v1"),
        ("pingsources.sources.knative.dev", "v1"),
    ],
)
def test_the_versions_graylane_writes_are_served_and_stored(
    crds: dict[str, dict[str, Any]], name: str, storage: str
) -> None:
    crd = crds[name]
    assert [v["name"] for v in crd["spec"]["versions"] if v.get("storage")] == [storage]
    assert _schema(crd, storage)["properties"]["spec"].get("properties"), (
        "a schema'd spec, not preserve-unknown"
    )
