"""Set one scalar in a YAML file and change nothing else: comments, order, quoting, anchors stay byte for byte.

PyYAML's composer gives every node its start and end offsets in the text; the edit replaces the bytes of the
one scalar (keeping its quoting style) or, when the key is missing from a block mapping, inserts one line
next to its siblings. The two files graylane edits:

- a kustomization: `images: [{name: <image>, newTag: <tag>}]` (`digest:` for a version pinned by digest);
- Helm values: the dotted key, `image.tag` by default.
"""

from __future__ import annotations

import re
from typing import Any

from functions.errors import ConfigError

_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-/@:]*")


def _compose(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.compose(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not YAML: {err}") from err


def _scalar(value: str, style: str | None) -> str:
    """`value` written in the node's quoting style; a plain scalar that YAML would not read back as this very
    string (1.10 is a float, yes a boolean) is double-quoted instead."""
    import yaml

    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"' or not _PLAIN_SAFE.fullmatch(value) or yaml.safe_load(value) != value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _mapping_get(node: Any, key: str) -> tuple[Any, Any] | None:
    for k, v in node.value:
        if getattr(k, "value", None) == key:
            return k, v
    return None


def _replace(text: str, node: Any, value: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"expected a scalar at line {node.start_mark.line + 1}, found a {node.tag}")
    if node.style in ("|", ">"):
        raise ConfigError(
            f"the scalar at line {node.start_mark.line + 1} is a block scalar; write it on one line"
        )
    return text[: node.start_mark.index] + _scalar(value, node.style) + text[node.end_mark.index :]


def _insert_after(text: str, mapping: Any, sibling: Any, key: str, value: str) -> str:
    """A `key: value` line after the line holding `sibling`'s value, indented like `sibling`'s key."""
    if mapping.flow_style:
        raise ConfigError(
            f"line {mapping.start_mark.line + 1}: {key} is missing from a flow mapping; add it once by hand"
        )
    key_node, value_node = sibling
    line = f"{' ' * key_node.start_mark.column}{key}: {_scalar(value, None)}"
    end = text.find("\n", value_node.end_mark.index)
    if end < 0:  # the last line, without a newline
        return text + "\n" + line + "\n"
    return text[:end] + "\n" + line + text[end:]


def set_kustomize_image(
    text: str, image: str, tag: str = "", digest: str = "", where: str = "kustomization"
) -> str:
    """The kustomization with the `images` entry named `image` set to `tag` (or `digest`)."""
    import yaml

    root = _compose(text, where)
    if not isinstance(root, yaml.MappingNode) or (images := _mapping_get(root, "images")) is None:
        raise ConfigError(f"{where} has no images list; add an entry {{name: {image}, newTag: ...}} once")
    seq = images[1]
    if not isinstance(seq, yaml.SequenceNode):
        raise ConfigError(f"{where}: images is not a list")
    entries = [
        e
        for e in seq.value
        if isinstance(e, yaml.MappingNode)
        and (n := _mapping_get(e, "name")) is not None
        and n[1].value == image
    ]
    if not entries:
        names = [
            n[1].value
            for e in seq.value
            if isinstance(e, yaml.MappingNode) and (n := _mapping_get(e, "name"))
        ]
        raise ConfigError(f"{where}: no images entry named {image} (entries: {', '.join(names) or 'none'})")
    entry = entries[0]
    field, value = ("digest", digest) if digest else ("newTag", tag)
    found = _mapping_get(entry, field)
    if found is not None:
        return _replace(text, found[1], value)
    return _insert_after(text, entry, _mapping_get(entry, "name"), field, value)


def set_helm_value(text: str, dotted: str, value: str, where: str = "values") -> str:
    """The values file with the scalar at `dotted` (e.g. image.tag) set to `value`."""
    import yaml

    node = _compose(text, where)
    path = dotted.split(".")
    for i, key in enumerate(path):
        if not isinstance(node, yaml.MappingNode) or (found := _mapping_get(node, key)) is None:
            raise ConfigError(f"{where} has no {'.'.join(path[: i + 1])} (looking for {dotted})")
        node = found[1]
    return _replace(text, node, value)


def get_helm_value(text: str, dotted: str) -> Any:
    import yaml

    data: Any = yaml.safe_load(text)
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data
