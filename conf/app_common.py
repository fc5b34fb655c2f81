"""What several console scripts share besides the config: user paths and setting comparisons.

A path on the command line is taken from the launch directory (Hydra does not chdir), and a
saved setting (a dataset's header, a checkpoint's config) is compared with the requested
one key by key, so a refusal can name every key that differs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A user path, relative ones taken from the launch directory (Hydra does not chdir here)."""
    return Path(path).expanduser().resolve()


def key_differences(
    stored: dict[str, Any], requested: dict[str, Any], prefix: str = ""
) -> list[str]:
    """Dotted keys whose values differ, each as ``key: stored -> requested``."""
    differences = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += key_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return differences
