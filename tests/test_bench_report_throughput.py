"""bench/report_throughput.py measures the run the report trains, and its main path prints
a table and a JSON line of positive rates."""

import json

from omegaconf import OmegaConf

from bench import report_throughput
from conf.compose import compose_config
from learner.report.jobs import run_overrides


def flat(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}


def test_the_bench_trains_the_report_runs_config_but_for_steps_evaluation_and_checkpoints(tmp_path):
    preset = report_throughput.preset_config("objects", dataset_steps=512)
    report_run = compose_config(run_overrides(preset, [], "ciper", 0, tmp_path))
    bench_run = compose_config(report_throughput.bench_overrides(preset, "ciper", tmp_path, steps=7))
    a, b = (flat(OmegaConf.to_container(c, resolve=True)) for c in (report_run, bench_run))
    differing = {k.rstrip(".") for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert differing == {"train.steps", "train.evaluate", "train.checkpoint_every"}
    assert (b["train.steps."], b["train.evaluate."]) == (7, False)


def test_main_prints_a_table_and_json_of_positive_rates(capsys):
    payload = report_throughput.main(["--steps", "2", "--rounds", "1", "--presets", "static", "--methods", "simclr",
                                      "--dataset-steps", "256"])  # fmt: skip
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(payload))
    rates = payload["presets"]["static"]["images_per_s"]["simclr"]
    # static has the learner's augmentations off: the no-augmentation step is the same config, not re-measured
    assert set(rates) == {report_throughput.PURE, report_throughput.OFFLINE}
    assert all(rate > 0 for rate in rates.values())
    for name in report_throughput.MEASUREMENTS:
        assert f"| simclr | {name} |" in out
    assert "runs at this rate" in out
