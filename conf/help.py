"""``--help`` of the console scripts: the script's docstring, then every config key with
its default and the one-line comment it carries in ``conf/schema.py``."""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

from omegaconf import OmegaConf

from conf.schema import DEFAULT_GROUPS, GROUP_OPTIONS, CiperConfig

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.*)$")


def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` of a schema dataclass, read from its source."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = _FIELD_COMMENT.match(line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def key_table() -> list[tuple[str, str, str]]:
    """(dotted key, default as written on the command line, comment) of every schema key."""
    defaults = OmegaConf.structured(CiperConfig)
    rows = []
    top_comments = field_comments(CiperConfig)
    for section in dataclasses.fields(CiperConfig):
        node_type: Any = section.default_factory() if section.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if not dataclasses.is_dataclass(node_type):
            value = OmegaConf.to_container(defaults)[section.name]  # type: ignore[index]
            rows.append((section.name, str(value), top_comments.get(section.name, "")))
            continue
        comments = field_comments(type(node_type))
        for field in dataclasses.fields(node_type):
            value = defaults[section.name]._get_node(field.name)._value()
            shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            rows.append((f"{section.name}.{field.name}", shown, comments.get(field.name, "")))
    return rows


def help_text(script: str, doc: str) -> str:
    """The whole ``--help`` page of ``script``."""
    presets = [f"{group}={'|'.join(GROUP_OPTIONS[group])} (default {DEFAULT_GROUPS[group]})" for group in GROUP_OPTIONS]
    rows = key_table()
    width = max(len(f"{key}={value}") for key, value, _ in rows if len(f"{key}={value}") <= 44)
    lines = [
        inspect.cleandoc(doc),
        "",
        f"usage: {script} [key=value ...]      override any key below (a misspelt key is an error)",
        f"       {script} -m key=a,b ...        multirun: one run per combination, with a summary table",
        f"       {script} --cfg job [--resolve] print the composed config and exit",
        f"       {script} hydra.run.dir=PATH    choose the run folder (rerun the same line to resume)",
        f"       {script} --hydra-help          Hydra's own options",
        "",
        "presets: " + "; ".join(presets),
        "",
        "config keys (default, then what the key does):",
    ]
    for key, value, comment in rows:
        setting = f"{key}={value}"
        if len(setting) > width:  # a long default gets a line of its own
            lines.append(f"  {setting}")
            setting = ""
        lines.append(f"  {setting:<{width}}  {comment}".rstrip())
    return "\n".join(lines)
