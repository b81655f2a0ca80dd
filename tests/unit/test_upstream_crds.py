"""The pin list of the upstream CRDs (tests/k8s/upstream-crds.txt): its format and its cache key."""

from __future__ import annotations

import pytest

from tests.k8s.upstream_crds import Pin, crd_dir, parse_pins, read_pins

SHA = "ab" * 32
LINE = f"sigs.k8s.io/gateway-api@v1.4.1  config/crd/standard/x.yaml  {SHA}  gateway-x.yaml"


def test_a_line_is_module_at_version_path_sha256_and_file() -> None:
    text = f"# header\n\n{LINE}  # trailing comment\n"
    assert parse_pins(text) == [
        Pin("sigs.k8s.io/gateway-api", "v1.4.1", "config/crd/standard/x.yaml", SHA, "gateway-x.yaml")
    ]


def test_pseudo_versions_and_major_version_suffixes_parse() -> None:
    [pin] = parse_pins(f"github.com/traefik/traefik/v3@v3.6.12  docs/a.yml  {SHA}  a.yml\n")
    assert (pin.module, pin.version) == ("github.com/traefik/traefik/v3", "v3.6.12")
    [pin] = parse_pins(f"istio.io/istio@v0.0.0-20260827124520-eed52ebb66ad  m/c.yaml  {SHA}  c.yaml\n")
    assert pin.version == "v0.0.0-20260827124520-eed52ebb66ad"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (f"sigs.k8s.io/gateway-api  config/x.yaml  {SHA}  x.yaml", "is not module@version"),
        (
            f"sigs.k8s.io/gateway-api@v1.4.1  config/x.yaml  {SHA[:-1]}  x.yaml",
            "is not a lower-case hex sha256",
        ),
        (
            f"sigs.k8s.io/gateway-api@v1.4.1  config/x.yaml  {SHA.upper()}  x.yaml",
            "is not a lower-case hex sha256",
        ),
        (f"sigs.k8s.io/gateway-api@v1.4.1  config/x.yaml  {SHA}", "expected `module@version  path-in-module"),
        (f"sigs.k8s.io/gateway-api@v1.4.1  config/x.yaml  {SHA}  ../x.yaml", "must be a plain name"),
        (f"sigs.k8s.io/gateway-api@v1.4.1  ../x.yaml  {SHA}  x.yaml", "a path inside the module"),
    ],
)
def test_a_malformed_line_is_refused_with_its_line_number(line: str, error: str) -> None:
    with pytest.raises(ValueError, match=f"list.txt:2: .*{error}"):
        parse_pins(f"# header\n{line}\n", "list.txt")


def test_a_file_name_listed_twice_and_an_empty_list_are_refused() -> None:
    with pytest.raises(ValueError, match="listed twice: gateway-x.yaml"):
        parse_pins(f"{LINE}\n{LINE.replace('x.yaml  ' + SHA, 'y.yaml  ' + SHA)}\n")
    with pytest.raises(ValueError, match="no pins"):
        parse_pins("# only a comment\n")


def test_the_cache_key_follows_the_pins_not_the_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAYLANE_CACHE", "/cache")
    pins = parse_pins(f"{LINE}\n")
    assert crd_dir(pins) == crd_dir(parse_pins(f"# another comment\n{LINE}\n"))
    assert str(crd_dir(pins)).startswith("/cache/crds/")
    assert crd_dir(pins) != crd_dir(parse_pins(LINE.replace("v1.4.1", "v1.4.0")))
    assert crd_dir(pins) != crd_dir(parse_pins(LINE.replace(SHA, "cd" * 32)))


def test_the_committed_list_pins_the_agreed_versions() -> None:
    pinned = {(p.module, p.version) for p in read_pins()}
    assert pinned == {
        ("github.com/traefik/traefik/v3", "v3.6.12"),
        ("github.com/traefik/traefik/v2", "v2.11.54"),
        ("istio.io/istio", "v0.0.0-20260827124520-eed52ebb66ad"),
        ("sigs.k8s.io/gateway-api", "v1.4.1"),
        ("knative.dev/serving", "v0.51.0"),
        ("knative.dev/eventing", "v0.50.0"),
    }
