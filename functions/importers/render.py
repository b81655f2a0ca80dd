"""An imported policy as YAML text: the notes as a comment header, multi-line queries as block scalars."""

from __future__ import annotations

from typing import Any

from functions.importers.common import Imported


def to_yaml(item: Imported, origin: str = "") -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> Any:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    where = f" ({origin})" if origin else ""
    head = [f"# Imported by `graylane import` from {item.source}{where}."]
    if item.notes:
        head.append("# Not expressed, or expressed differently:")
        head += [f"#   - {note}" for note in item.notes]
    body = yaml.dump(item.document, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=110)
    return "\n".join(head) + "\n" + body
