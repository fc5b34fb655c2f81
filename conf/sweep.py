"""A summary table over a multirun sweep (``ciper-train -m method=ciper,simclr ...``).

Hydra runs one job per combination into ``<sweep dir>/<num>_<overrides>/``. When the sweep
ends, `SweepSummary` reads every job's ``metrics.json`` and ``.hydra/overrides.yaml`` and
writes one row per job (its overrides, then its headline numbers) to ``summary.md`` in the
sweep folder, and prints it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# metrics.json entries shown, flattened (dotted); whatever a job's metrics lack stays empty.
SUMMARY_PREFIXES = ("completed", "steps", "stopped_by", "losses_last.", "eval.", "transitions", "images_per_s")


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def summary_table(sweep_dir: Path) -> str:
    """A Markdown table with one row per job folder of ``sweep_dir``."""
    rows: list[dict[str, Any]] = []
    for job in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()),
                      key=lambda p: int(p.name.split("_", 1)[0]) if p.name.split("_", 1)[0].isdigit() else 0):  # fmt: skip
        overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        metrics_path = job / "metrics.json"
        metrics = flatten(json.loads(metrics_path.read_text())) if metrics_path.is_file() else {"completed": "no metrics"}
        shown = {k: v for k, v in metrics.items() if k.startswith(SUMMARY_PREFIXES) and not isinstance(v, list)}
        rows.append({"job": job.name.split("_", 1)[0], "overrides": " ".join(overrides), **shown})  # type: ignore[arg-type]
    if not rows:
        return f"no finished jobs in {sweep_dir}"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class SweepSummary(Callback):
    """Writes ``summary.md`` into the sweep folder when a multirun ends, and prints it."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        table = summary_table(sweep_dir)
        (sweep_dir / "summary.md").write_text(table + "\n")
        print(f"\n{table}\n\nsummary: {sweep_dir / 'summary.md'}")
