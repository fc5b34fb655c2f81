"""A summary table over a multirun sweep (``ciper-train -m method=ciper,simclr ...``).

Hydra runs one job per combination into ``<sweep dir>/<n>/``. When the sweep ends,
`SweepSummary` reads every job's ``metrics.json`` and ``.hydra/overrides.yaml`` and writes
one row per job (the values of the swept keys, then its headline numbers) to ``summary.md``
in the sweep folder, and prints it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from conf.app import override_key
from conf.app_common import flatten

# metrics.json entries shown, flattened (dotted); whatever a job's metrics lack stays empty.
SUMMARY_PREFIXES = ("completed", "steps", "stopped_by", "losses_last.", "eval.", "transitions", "images_per_s")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def summary_table(sweep_dir: Path, swept: Iterable[str] = ()) -> str:
    """A Markdown table with one row per job folder of ``sweep_dir``; the overrides column
    shows the ``swept`` keys (all overrides when none are given)."""
    swept = set(swept)
    rows: list[dict[str, Any]] = []
    jobs = [p for p in sweep_dir.iterdir() if p.name.isdigit() and (p / ".hydra" / "overrides.yaml").is_file()]
    for job in sorted(jobs, key=lambda p: int(p.name)):
        overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))]  # type: ignore[union-attr]
        shown_overrides = [o for o in overrides if not swept or override_key(o) in swept]
        metrics_path = job / "metrics.json"
        metrics = flatten(json.loads(metrics_path.read_text())) if metrics_path.is_file() else {"completed": "no metrics"}
        shown = {k: v for k, v in metrics.items() if k.startswith(SUMMARY_PREFIXES) and not isinstance(v, list)}
        rows.append({"job": job.name, "overrides": " ".join(shown_overrides), **shown})
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
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        table = summary_table(sweep_dir, [o.key_or_group for o in parsed if o.is_sweep_override()])
        (sweep_dir / "summary.md").write_text(table + "\n")
        print(f"\n{table}\n\nsummary: {sweep_dir / 'summary.md'}")
