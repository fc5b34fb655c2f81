"""What several console scripts share besides the config: user paths and setting comparisons.

A path on the command line is taken from the launch directory (Hydra does not chdir), and a
saved setting (a dataset's header, a checkpoint's config) is compared with the requested
one key by key, so a refusal can name every key that differs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A user path, relative ones taken from the launch directory (Hydra does not chdir here)."""
    return Path(path).expanduser().resolve()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a nested (plain) config or record with dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def key_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ, each as ``key: stored -> requested`` (a key one side
    lacks counts as None there)."""
    a, b = flatten(stored), flatten(requested)
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
