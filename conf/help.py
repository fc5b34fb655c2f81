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


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def key_table() -> list[tuple[str, str, str]]:
    """(dotted key, default as written on the command line, comment) of every schema key; a
    registered group's section (``method``) shows its default option's keys."""
    defaults = OmegaConf.structured(CiperConfig)
    rows = []
    top_comments = field_comments(CiperConfig)
    for section in dataclasses.fields(CiperConfig):
        node: Any = section.default_factory() if section.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if not dataclasses.is_dataclass(node):
            value = OmegaConf.to_container(defaults)[section.name]  # type: ignore[index]
            rows.append((section.name, str(value), top_comments.get(section.name, "")))
            continue
        if section.name in GROUP_OPTIONS and dataclasses.is_dataclass(GROUP_OPTIONS[section.name].get(DEFAULT_GROUPS[section.name])):
            node = GROUP_OPTIONS[section.name][DEFAULT_GROUPS[section.name]]
            values = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
        else:
            values = {f.name: defaults[section.name]._get_node(f.name)._value() for f in dataclasses.fields(node)}
        comments = {k: v for cls in reversed(type(node).__mro__[:-1]) for k, v in field_comments(cls).items()}
        for field in dataclasses.fields(node):
            rows.append((f"{section.name}.{field.name}", _shown(values[field.name]), comments.get(field.name, "")))
    return rows


def option_keys(group: str) -> list[str]:
    """One line per option of a registered ``group``: the keys and defaults it differs in from
    the default option (``method=simclr: time_offset=0 temperature=0.1``)."""
    options = GROUP_OPTIONS.get(group, {})
    default = options.get(DEFAULT_GROUPS.get(group, ""))
    if not dataclasses.is_dataclass(default):
        return []
    base = {f.name: getattr(default, f.name) for f in dataclasses.fields(default)}
    lines = []
    for name, node in options.items():
        if name == DEFAULT_GROUPS[group] or not dataclasses.is_dataclass(node):
            continue
        own = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
        changed = [f"{k}={_shown(v)}" for k, v in own.items() if k != "name" and (k not in base or base[k] != v)]
        missing = [k for k in base if k not in own]
        lines.append(f"  {group}={name}: " + (" ".join(changed) or "(as the default)")
                     + (f"; without {', '.join(missing)}" if missing else ""))  # fmt: skip
    return lines


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
        *(["", "method options (their own keys and defaults, beside those of the default method):"] + option_keys("method")
          if option_keys("method") else []),
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
