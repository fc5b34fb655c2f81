"""ciper-report: aggregation, markdown and target checks on synthetic numbers; one tiny end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conf.app_common import flatten
from learner.evaluation.references import REFERENCES, pixel_features
from learner.report import tables as report
from learner.report.jobs import merged_overrides, passed_through, run_overrides


def synthetic(ciper: dict[str, list[float]], simclr: dict[str, list[float]]) -> dict:
    """per_seed[method][seed][metric] from per-metric lists over seeds 0..n-1."""
    return {
        name: {seed: {metric: values[seed] for metric, values in columns.items()}
               for seed in range(len(next(iter(columns.values()))))}  # fmt: skip
        for name, columns in (("ciper", ciper), ("simclr", simclr))
    }


def by_name(checks: list[report.TargetCheck]) -> dict[str, report.TargetCheck]:
    return {c.name: c for c in checks}


def test_cell_is_mean_and_sample_std_of_finite_values():
    c = report.cell([1.0, 2.0, math.nan, 3.0])
    assert (c.mean, c.n) == (2.0, 3)
    assert c.std == pytest.approx(np.std([1.0, 2.0, 3.0], ddof=1))
    assert report.cell([5.0]) == report.MetricCell(5.0, 0.0, 1)
    empty = report.cell([math.nan])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_summarise_orders_known_metrics_first_and_keeps_methods():
    per_seed = {"simclr": {0: {"extra": 1.0, "relative_pose_r2": 0.1}, 1: {"extra": 3.0, "relative_pose_r2": 0.3}},
                "ciper": {0: {"category_top1_linear": 0.5}}}  # fmt: skip
    table = report.summarise(per_seed)
    assert list(table) == ["simclr", "ciper"]
    assert list(table["simclr"]) == ["category_top1_linear", "relative_pose_r2", "extra"]
    assert table["simclr"]["relative_pose_r2"].mean == pytest.approx(0.2)
    assert table["simclr"]["category_top1_linear"].n == 0  # missing -> nan, not 0
    assert table["ciper"]["category_top1_linear"] == report.MetricCell(0.5, 0.0, 1)


def test_targets_pass_when_ciper_meets_every_one():
    per_seed = synthetic(
        ciper={"relative_pose_r2": [0.6, 0.62, 0.58], "category_top1_linear": [0.49, 0.50, 0.51],
               "within_object_pose_spearman": [0.80, 0.82, 0.81]},
        simclr={"relative_pose_r2": [0.3, 0.32, 0.35], "category_top1_linear": [0.50, 0.51, 0.52],
                "within_object_pose_spearman": [0.60, 0.61, 0.62]},
    )  # fmt: skip
    checks = by_name(report.check_targets(per_seed, "ciper", "simclr"))
    assert [c.passed for c in checks.values()] == [True, True, True, None]  # no pixels row: learning undecidable
    assert "+0.277" in checks["equivariance"].detail  # 0.600 - 0.323


def test_targets_fail_on_each_threshold():
    per_seed = synthetic(
        ciper={"relative_pose_r2": [0.45, 0.45], "category_top1_linear": [0.47, 0.47],
               "within_object_pose_spearman": [0.70, 0.60]},
        simclr={"relative_pose_r2": [0.30, 0.30], "category_top1_linear": [0.50, 0.50],
                "within_object_pose_spearman": [0.60, 0.61]},
    )  # fmt: skip
    checks = by_name(report.check_targets(per_seed, "ciper", "simclr"))
    assert checks["equivariance"].passed is False  # +0.15 < +0.2
    assert checks["invariance"].passed is False  # 3 points below
    # d = (+0.10, -0.01): mean 0.045 < 2 sd (~0.156): above on average, not clearly.
    assert checks["hierarchy"].passed is False
    assert "mean(d) = +0.045" in checks["hierarchy"].detail


def test_targets_at_the_boundaries_and_when_undecidable():
    per_seed = synthetic(
        ciper={"relative_pose_r2": [0.5], "category_top1_linear": [0.48],
               "within_object_pose_spearman": [0.9]},
        simclr={"relative_pose_r2": [0.3], "category_top1_linear": [0.50],
                "within_object_pose_spearman": [0.1]},
    )  # fmt: skip
    checks = by_name(report.check_targets(per_seed, "ciper", "simclr"))
    assert checks["equivariance"].passed is True  # exactly +0.2 counts
    assert checks["invariance"].passed is True  # exactly 2 points below counts
    assert checks["hierarchy"].passed is None  # one seed: no spread of the difference
    missing = by_name(report.check_targets({"ciper": per_seed["ciper"]}, "ciper", "simclr"))
    assert all(c.passed is None for c in missing.values())


def test_mean_loss_curves_average_over_seeds_and_smooth():
    runs = [[{"step": s, "loss": float(s), "nt_xent": 1.0} for s in range(1, 5)],
            [{"step": s, "loss": float(s) + 2.0, "nt_xent": 3.0} for s in range(1, 4)]]  # fmt: skip
    curves = report.mean_loss_curves({"ciper": runs})
    assert curves["ciper"]["loss"] == [(1, 2.0), (2, 3.0), (3, 4.0)]  # steps both seeds logged
    assert curves["ciper"]["nt_xent"] == [(1, 2.0), (2, 2.0), (3, 2.0)]
    smoothed = report.mean_loss_curves({"ciper": runs}, smooth=2)
    assert smoothed["ciper"]["loss"] == [(1, 2.0), (2, 2.5), (3, 3.5)]
    with pytest.raises(ValueError, match="smooth=0"):
        report.mean_loss_curves({"ciper": runs}, smooth=0)


def test_markdown_table_marks_best_and_references():
    per_seed = {"ciper": {0: {"relative_pose_r2": 0.5}, 1: {"relative_pose_r2": 0.7}},
                "simclr": {0: {"relative_pose_r2": 0.2}, 1: {"relative_pose_r2": 0.4}},
                "random init": {0: {"relative_pose_r2": 0.9}, 1: {"relative_pose_r2": 0.9}}}  # fmt: skip
    text = report.markdown_table(report.summarise(per_seed), references=["random init"])
    lines = text.splitlines()
    assert lines[0] == "| method | relative_pose_r2 ↑ |"
    assert lines[2] == "| ciper | **0.600 ± 0.141** |"
    assert lines[3] == "| simclr | 0.300 ± 0.141 |"
    assert lines[4] == "| random init (reference) | 0.900 ± 0.000 |"  # not ranked


def test_per_column_scores_get_their_own_table_and_shortcut_ranks_low_first():
    per_seed = {"ciper": {0: {"relative_pose_r2": 0.5, "relative_pose_r2/camera_azimuth": 0.4, "shortcut_colour_top1": 0.2}},
                "simclr": {0: {"relative_pose_r2": 0.3, "relative_pose_r2/camera_azimuth": 0.6, "shortcut_colour_top1": 0.1}},
                "oracle": {0: {"relative_pose_r2": 0.99, "relative_pose_r2/camera_azimuth": 0.98}}}  # fmt: skip
    table = report.summarise(per_seed)
    headline = report.markdown_table(table, references=["oracle"]).splitlines()
    assert headline[0] == "| method | relative_pose_r2 ↑ | shortcut_colour_top1 ↓ |"
    assert headline[2] == "| ciper | **0.500** | 0.200 |" and headline[3] == "| simclr | 0.300 | **0.100** |"
    columns = report.markdown_table(table, references=["oracle"], per_column=True).splitlines()
    assert columns[0] == "| method | relative_pose_r2/camera_azimuth ↑ |"
    assert columns[4] == "| oracle (reference) | 0.980 |"
    text = report.markdown_report(table, [], references=["oracle"])
    assert "Per-column pose R²" in text


def test_markdown_report_and_payload_carry_targets_and_plots():
    per_seed = synthetic(ciper={"relative_pose_r2": [0.1, 0.2]}, simclr={"relative_pose_r2": [0.3, 0.2]})
    table = report.summarise(per_seed)
    targets = report.check_targets(per_seed, "ciper", "simclr")
    text = report.markdown_report(table, targets, setup=["2 seeds"], plots={"losses": "loss_curves.png"})
    assert "## Targets" in text and "**FAIL** equivariance" in text and "**UNDECIDED** invariance" in text
    assert "![losses](loss_curves.png)" in text and "- 2 seeds" in text
    payload = json.loads(json.dumps(report.report_payload(per_seed, table, targets, timings={"runs_s": 1.0})))
    assert payload["per_seed"]["ciper"]["1"]["relative_pose_r2"] == 0.2
    assert payload["table"]["simclr"]["relative_pose_r2"]["mean"] == pytest.approx(0.25)
    assert payload["targets"][0]["passed"] is False and payload["timings"] == {"runs_s": 1.0}


def test_run_overrides_layer_preset_user_then_report_keys(make_config):
    cfg = make_config("report=quick", "report.steps=7", "+report.method_overrides.simclr_tt=['method.time_offset=3']")
    user = passed_through(["env.image_size=32", "report.steps=9", "hydra.run.dir=x", "train.steps=99",
                           "eval.probe_epochs=3"])  # fmt: skip
    assert user == ["env.image_size=32", "train.steps=99", "eval.probe_epochs=3"]
    overrides = run_overrides(cfg, user, "simclr_tt", 2, None)
    assert "train.steps=7" in overrides and "train.steps=99" not in overrides  # the report's budget wins
    assert "eval.probe_epochs=3" in overrides  # the user's wins over the preset's
    assert {"method=simclr_tt", "train.seed=2", "method.time_offset=3", "env.image_size=32"} <= set(overrides)
    # A user's method key goes only to the methods that have it.
    assert "method.prediction_weight=2" in run_overrides(cfg, ["method.prediction_weight=2"], "ciper", 0, None)
    assert "method.prediction_weight=2" not in run_overrides(cfg, ["method.prediction_weight=2"], "simclr", 0, None)
    assert merged_overrides(["a=1", "+b=2"], ["b=3"]) == ["a=1", "b=3"]
    composed = make_config(*overrides)
    assert (composed.method.name, composed.method.time_offset, composed.train.steps) == ("simclr_tt", 3, 7)


def test_pixel_features_downsample_and_scale():
    views = np.full((3, 32, 32, 3), 255, np.uint8)
    feats = pixel_features(views, side=4)
    assert feats.shape == (3, 48) and feats.dtype == np.float32 and np.allclose(feats, 1.0)


@pytest.mark.slow
def test_report_end_to_end_writes_table_plots_and_resumes(tmp_path, make_config):
    from learner.report.builder import build_report

    # Kept cheap (two methods, one seed, 4 steps, 12 objects per split): the code paths, not the numbers.
    user = ["env.image_size=32", "env.episode_steps=16", "model.width=8", "model.proj_hidden=64",
            "model.pred_hidden=64", "eval.views_per_object=4", "eval.objects_limit=12", "eval.probe_epochs=2",
            "dataset.shard_size=256", "collector.vectorization=sync", "train.checkpoint_every=1000"]  # fmt: skip
    out = tmp_path / "report"
    cfg = make_config(*user, "report.methods=[ciper,simclr]", "report.seeds=[0]", "report.steps=4",
                      "report.batch_size=8", "report.dataset_steps=256", run_dir=out)  # fmt: skip
    payload = build_report(cfg, user)

    text = (out / "report.md").read_text()
    for row in ("| ciper |", "| simclr |", *(f"| {ref} (reference) |" for ref in REFERENCES)):
        assert row in text
    assert "relative_pose_r2 ↑" in text and "shortcut_colour_top1 ↓" in text and "## Targets" in text
    assert "relative_pose_r2/camera_azimuth ↑" in text  # the per-column table
    for png in ("loss_curves.png", "metric_bars.png", "pose_columns.png", "views.png", "embedding_ciper.png",
                "embedding_simclr.png"):  # fmt: skip
        assert (out / png).stat().st_size > 1000, png
    assert (out / "runs" / "ciper_seed0" / "config.yaml").exists()
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["per_seed"]) == {"ciper", "simclr", *REFERENCES}
    assert set(saved["per_seed"]["ciper"]["0"]) >= {"relative_pose_r2", "category_top1_linear", "shortcut_colour_top1"}
    assert 0 <= saved["per_seed"]["simclr"]["0"]["shortcut_colour_top1"] <= 1
    assert [t["name"] for t in payload["targets"]] == ["equivariance", "invariance", "hierarchy", "learning"]
    assert "## Settings every run used" in text and "`method.name` differs: 'ciper' in ciper_seed0" in text
    assert "`train` (all 2 runs):" in text and "steps=4" in text  # from the saved configs
    assert "| metric | ciper − simclr per seed | mean ± sd | mean / sd |" in text
    headline = json.loads((out / "metrics.json").read_text())
    assert headline["targets"] == saved["targets"] and "ciper" in headline["table"]

    # Rerun after a kill that left simclr unfinished (no metrics.json): the dataset and the
    # finished run are reused untouched, simclr resumes from its checkpoint, the numbers agree.
    stamp = (out / "runs" / "ciper_seed0" / "metrics.json").stat().st_mtime_ns
    (out / "runs" / "simclr_seed0" / "metrics.json").unlink()
    again = build_report(cfg, user)
    assert (out / "runs" / "ciper_seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert (out / "runs" / "simclr_seed0" / "metrics.json").exists()
    assert again["per_seed"]["ciper"] == payload["per_seed"]["ciper"]
    assert again["table"].keys() == payload["table"].keys()

    # bench/head_readout.py reads the trained CIPER head on held-out pairs, one R² per
    # relative-action column, and refuses a run without a head.
    from bench import head_readout

    readout = head_readout.main([str(out / "runs" / "ciper_seed0")])["ciper_seed0"]
    assert list(readout) == ["camera_azimuth_sin", "camera_azimuth_cos", "camera_elevation", "camera_distance"]
    assert all(math.isfinite(v) and v <= 1 for v in readout.values()), readout
    with pytest.raises(SystemExit, match="no prediction head"):
        head_readout.main([str(out / "runs" / "simclr_seed0")])


def test_a_run_folder_made_with_another_config_is_refused(tmp_path, make_config):
    from omegaconf import OmegaConf

    from learner.report.jobs import check_same_config

    OmegaConf.save(make_config("train.steps=10"), tmp_path / "config.yaml")
    check_same_config(tmp_path, make_config("train.steps=10"))
    with pytest.raises(ValueError, match="train.steps: 10 -> 20"):
        check_same_config(tmp_path, make_config("train.steps=20"))


def test_paired_differences_table_has_each_seed_mean_sd_and_ratio():
    per_seed = synthetic(ciper={"relative_pose_r2": [0.5, 0.6, 0.7], "category_top1_linear": [0.3, 0.3, 0.3]},
                         simclr={"relative_pose_r2": [0.2, 0.4, 0.3], "category_top1_linear": [0.3, 0.2, 0.4]})  # fmt: skip
    cells = report.paired_cells(per_seed, "ciper", "simclr")
    c, d = cells["relative_pose_r2"]
    assert np.allclose(d, [0.3, 0.2, 0.4])
    assert c.mean == pytest.approx(0.3) and c.std == pytest.approx(0.1) and c.n == 3
    assert cells["category_top1_linear"][0].mean == pytest.approx(0.0)
    lines = report.markdown_paired(per_seed, "ciper", "simclr").splitlines()
    assert lines[0] == "| metric | ciper − simclr per seed | mean ± sd | mean / sd |"
    assert "| relative_pose_r2 | +0.300, +0.200, +0.400 | 0.300 ± 0.100 | +3.0 |" in lines


def test_learning_target_needs_simclr_ten_points_above_raw_pixels():
    per_seed = synthetic(ciper={"category_top1_linear": [0.30, 0.32]}, simclr={"category_top1_linear": [0.25, 0.27]})
    per_seed["pixels"] = {0: {"category_top1_linear": 0.15}}
    assert by_name(report.check_targets(per_seed, "ciper", "simclr"))["learning"].passed is True  # 26% vs 15%: +11 points
    per_seed["pixels"] = {0: {"category_top1_linear": 0.17}}
    check = by_name(report.check_targets(per_seed, "ciper", "simclr"))["learning"]
    assert check.passed is False and "+9.0 points" in check.detail
    assert by_name(report.check_targets({k: v for k, v in per_seed.items() if k != "pixels"}, "ciper", "simclr"))["learning"].passed is None


def test_settings_lines_list_shared_values_per_section_and_name_the_runs_that_differ():
    configs = {
        "ciper_seed0": flatten({"env": {"image_size": 32}, "method": {"name": "ciper", "time_offset": 1},
                                           "train": {"seed": 0}, "view": {"rows": 4}}),
        "simclr_seed0": flatten({"env": {"image_size": 32}, "method": {"name": "simclr", "time_offset": 0},
                                            "train": {"seed": 0}, "view": {"rows": 9}}),
    }  # fmt: skip
    assert configs["ciper_seed0"]["method.time_offset"] == 1
    lines = report.settings_lines(configs)
    assert lines[0] == "`env` (all 2 runs): image_size=32"
    assert "`train` (all 2 runs): seed=0" in lines
    assert "`method.name` differs: 'ciper' in ciper_seed0; 'simclr' in simclr_seed0" in lines
    assert not any("view" in line for line in lines)  # not a section that shapes training or scores
    assert report.settings_lines({}) == []


def test_report_progress_counts_steps_and_evaluations(make_config):
    from learner.report.jobs import EVALUATION_STEPS, Job, StepProgress, job_weight

    cfg = make_config("report.steps=300", "+report.variants.long=['train.steps=900']")
    assert job_weight(Job("ciper", 0), cfg) == 300 + EVALUATION_STEPS
    assert job_weight(Job("ciper", 0, variant="long"), cfg) == 900 + EVALUATION_STEPS  # the variant's own budget
    assert job_weight(Job("pixels", 0, reference=True), cfg) == EVALUATION_STEPS

    class Bar:
        n = 0

        def update(self, k: int) -> None:
            self.n += k

    bar = Bar()
    progress = StepProgress(bar)
    for step in (41, 42, 43):  # a run resumed at step 40 counts only the steps trained now
        progress.on_step(step, None, None)
    assert bar.n == 3


@pytest.mark.parametrize("preset", ["quick", "static", "objects"])
def test_presets_compose_validate_and_build_every_run(preset, make_config, tmp_path):
    """Every run of a preset composes, validates, and its learner's augmentation accepts the env."""
    from conf.validate import validate_config
    from envs import world_module
    from learner.data.augment import augmentation_spec

    cfg = make_config(f"report={preset}")
    validate_config(cfg)
    assert len(cfg.report.methods) == (6 if preset == "quick" else 5) and list(cfg.report.seeds) == [0, 1, 2]
    assert {"ciper", "ciper_contrastive", "supervised"} <= set(cfg.report.methods)  # the twin and the ceiling
    for method in cfg.report.methods:  # the references compose as ciper runs do
        run = make_config(*run_overrides(cfg, [], method, 0, tmp_path / "d"))
        validate_config(run)
        assert run.train.steps == cfg.report.steps and run.train.mode == "offline"
        names = [d.name for d in world_module(str(run.env.id)).action_dims(str(run.env.action_set))]
        augmentation_spec(run.method, names, str(run.env.action_set))  # raises if they double up
        if method in ("simclr", "ciper_contrastive"):
            assert run.method.time_offset == {"simclr": 0, "ciper_contrastive": 4 if preset == "objects" else 1}[method]


def test_static_and_objects_presets_are_the_issue_setups(make_config):
    static, objects = make_config("report=static"), make_config("report=objects")
    s = make_config(*run_overrides(static, [], "simclr", 0, None))
    assert (s.env.id, s.env.action_set, s.method.time_offset) == ("ciper/ImageView-v0", "full", 1)
    # On static images SimCLR's pairs are CIPER's: ciper_contrastive is the row and the baseline.
    twin = make_config(*run_overrides(static, [], "ciper_contrastive", 0, None)).method
    assert {k: v for k, v in twin.items() if k != "name"} == {k: v for k, v in s.method.items() if k != "name"}
    assert "simclr" not in static.report.methods and static.report.baseline == "ciper_contrastive"
    o = make_config(*run_overrides(objects, [], "simclr", 0, None))
    assert (o.env.id, o.env.action_set, o.method.time_offset) == ("ciper/ObjectView-v0", "observer", 0)
    assert o.method.augment_crop and o.method.augment_color  # simclr = two Kornia augmentations of one view


def test_columns_the_ceiling_cannot_read_are_marked_and_left_out_of_the_learnable_headline():
    per_seed = {
        "supervised": {s: {"relative_pose_r2/a": 0.8 + s / 100, "relative_pose_r2/b": 0.1} for s in (0, 1)},
        "ciper": {s: {"relative_pose_r2/a": 0.5, "relative_pose_r2/b": -0.1, "relative_pose_r2": 0.2} for s in (0, 1)},
    }
    learnable, not_learnable = report.learnable_columns(per_seed, "supervised")
    assert learnable == ["relative_pose_r2/a"] and not_learnable == ["relative_pose_r2/b"]
    extended = report.with_learnable_headline(per_seed, learnable)
    assert extended["ciper"][0]["relative_pose_r2_learnable"] == 0.5  # b left out
    assert extended["ciper"][0]["relative_pose_r2"] == 0.2  # the all-columns headline kept
    assert report.learnable_columns(per_seed, "nobody") == ([], [])
    table = report.summarise(extended)
    columns = report.markdown_table(table, per_column=True, ceiling="supervised", not_learnable=not_learnable)
    assert "relative_pose_r2/b ↑ (not learnable)" in columns and "relative_pose_r2/a ↑ |" in columns
    assert "| supervised (ceiling) |" in columns and "**" not in columns.split("supervised (ceiling)")[1].split("\n")[0]
    text = report.markdown_report(table, [], ceiling="supervised", not_learnable=not_learnable)
    assert "Not learnable here: `b` (0.10)" in text


def test_a_curve_table_shows_each_budget_and_the_paired_difference():
    per_seed = {f"{m}@{v}": {s: {"relative_pose_r2": base + gain * (m == "ciper") + s / 100}
                             for s in (0, 1)}  # fmt: skip
                for v, base, gain in (("short", 0.1, 0.01), ("long", 0.2, 0.05)) for m in ("ciper", "half")}
    x_of = {"ciper@short": 100, "half@short": 100, "ciper@long": 400, "half@long": 400}
    text = report.markdown_curve(per_seed, "ciper", "half", x_of, "train.steps", metrics=("relative_pose_r2",))
    lines = text.splitlines()
    assert lines[0].startswith("| train.steps | relative_pose_r2: ciper / half / ciper − half")
    assert lines[2].startswith("| 100 |") and "+0.010, +0.010" in lines[2]
    assert lines[3].startswith("| 400 |") and "+0.050, +0.050" in lines[3]
    # By default every curve metric the runs have, and only those: no ceiling, no learnable column.
    default = report.markdown_curve(per_seed, "ciper", "half", x_of, "train.steps").splitlines()[0]
    assert "relative_pose_r2:" in default and "relative_pose_r2_learnable" not in default
    for run in per_seed.values():
        for values in run.values():
            values["object_silhouette"] = 0.1
    assert "object_silhouette: ciper / half" in report.markdown_curve(per_seed, "ciper", "half", x_of, "train.steps")


@pytest.mark.slow
def test_a_report_over_variants_plots_scores_against_the_curve_key(tmp_path, make_config):
    from learner.report.builder import build_report

    user = ["env.image_size=32", "env.episode_steps=16", "model.width=8", "model.proj_hidden=64",
            "model.pred_hidden=64", "eval.views_per_object=4", "eval.objects_limit=12", "eval.probe_epochs=2",
            "dataset.shard_size=256", "collector.vectorization=sync", "train.checkpoint_every=1000"]  # fmt: skip
    out = tmp_path / "curve"
    cfg = make_config(*user, "report.methods=[ciper,ciper_contrastive,supervised]", "report.seeds=[0]",
                      "report.batch_size=8", "report.dataset_steps=256", "+report.variants.short=['train.steps=2']",
                      "+report.variants.long=['train.steps=4']", "report.curve_key=train.steps",
                      "report.comparisons=[[ciper,ciper_contrastive]]", run_dir=out)  # fmt: skip
    payload = build_report(cfg, user)
    labels = {f"{m}@{v}" for m in ("ciper", "ciper_contrastive", "supervised") for v in ("short", "long")}
    assert labels <= set(payload["per_seed"])
    assert (out / "runs" / "ciper_long_seed0" / "loss_history.json").exists()
    assert len(json.loads((out / "runs" / "ciper_long_seed0" / "loss_history.json").read_text())) == 4
    text = (out / "report.md").read_text()
    assert "## Against train.steps" in text and "| 2 |" in text and "| 4 |" in text
    assert "| metric | ciper@long − ciper_contrastive@long per seed |" in text
    assert (out / "curves.png").stat().st_size > 1000
    assert payload["learnable"]["ceiling"] == "supervised@long"


def test_scaling_and_policies_presets_vary_one_key_on_the_objects_setup(make_config, tmp_path):
    from conf.schema import OBJECTS_SETUP, SCALING_STEPS
    from conf.validate import validate_config

    scaling, policies = make_config("report=scaling"), make_config("report=policies")
    for cfg in (scaling, policies):
        validate_config(cfg)
        assert set(OBJECTS_SETUP) <= set(cfg.report.overrides)
    assert list(scaling.report.methods) == ["ciper", "ciper_contrastive"] and scaling.report.curve_key == "train.steps"
    for variant, steps in zip(scaling.report.variants, SCALING_STEPS, strict=True):
        run = make_config(*run_overrides(scaling, [], "ciper_contrastive", 1, tmp_path / "d", variant))
        assert (run.train.steps, run.train.seed, run.method.name, run.method.time_offset) == (steps, 1, "ciper_contrastive", 4)
    assert policies.report.mode == "online" and list(policies.report.methods) == ["ciper"]
    for variant in ("random", "smooth", "orbit", "curious"):
        run = make_config(*run_overrides(policies, [], "ciper", 0, None, variant))
        validate_config(run)
        assert (run.policy.name, run.train.mode, run.train.steps) == (variant, "online", policies.report.steps)
        assert (run.env.action_set, run.method.crop_scale) == ("observer", [0.5, 1.0])
        assert run.method.time_offset == 1  # the policies report keeps the one-step pairs it was measured with
    assert all(b == "ciper@random" for _, b in policies.report.comparisons)


def test_objects_and_scaling_pair_ciper_and_its_contrastive_half_alike(make_config, tmp_path):
    """CIPER and its contrastive half read the same pairs (up to 4 steps apart) on the objects
    setup; SimCLR keeps two augmentations of one view. At that offset the contrastive half is
    simclr_tt's loss and pairs, so report=objects has no separate simclr_tt row."""
    for preset in ("objects", "scaling"):
        cfg = make_config(f"report={preset}")
        offsets = {m: make_config(*run_overrides(cfg, [], m, 0, tmp_path / "d")).method for m in cfg.report.methods
                   if m != "supervised"}  # fmt: skip
        assert offsets["ciper"].time_offset == offsets["ciper_contrastive"].time_offset == 4
        assert "prediction_weight" not in offsets["ciper_contrastive"]  # SimCLR's settings: no head
    objects = make_config("report=objects")
    assert "simclr_tt" not in objects.report.methods and "simclr" in objects.report.methods
    assert make_config(*run_overrides(objects, [], "simclr", 0, tmp_path / "d")).method.time_offset == 0
    tt = make_config(*run_overrides(objects, [], "simclr_tt", 0, tmp_path / "d")).method
    half = make_config(*run_overrides(objects, [], "ciper_contrastive", 0, tmp_path / "d")).method
    assert {k: v for k, v in half.items() if k != "name"} == {k: v for k, v in tt.items() if k != "name"}


def test_online_tables_summarise_actions_and_throughput():
    edges = [-1.0, -0.5, 0.0, 0.5, 1.0]
    still = {"columns": ["x", "y"], "edges": edges, "counts": [[0, 5, 5, 0], [10, 0, 0, 0]]}
    mean_abs, near_zero = report.action_summary(still["counts"], edges)
    assert np.allclose(mean_abs, [0.25, 0.75]) and np.allclose(near_zero, [0.0, 0.0])
    text = report.markdown_actions({"ciper@random": still})
    assert text.splitlines()[2] == "| ciper@random | 0.25 / 0% | 0.75 / 0% |"
    runs = {"ciper@random": {s: {"images_per_s": 100.0 + s, "data_wait_fraction": 0.1, "wall_s": 10.0,
                                 "data": {"views_collected": 500.0}} for s in (0, 1)},  # fmt: skip
            "supervised": {0: {"images_per_s": 1.0, "data_wait_fraction": 0.0, "wall_s": 1.0, "data": {}}}}
    lines = report.markdown_throughput(runs).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| ciper@random | 100 ± 1 | 10.0 ± 0.0% | 50 ± 0 |")
    assert report.markdown_throughput({"supervised": runs["supervised"]}) == ""


@pytest.mark.slow
def test_an_online_report_over_policies_shows_actions_throughput_and_the_error_model(tmp_path, make_config):
    from learner.report.builder import build_report

    user = ["env.image_size=32", "env.episode_steps=8", "model.width=8", "model.proj_hidden=64", "model.pred_hidden=64",
            "eval.views_per_object=4", "eval.objects_limit=12", "eval.probe_epochs=2", "collector.num_envs=1",
            "collector.vectorization=sync", "buffer.warmup_views=32", "train.replay_ratio=2.0",
            "policy.curious_refresh_steps=2", "train.checkpoint_every=1000"]  # fmt: skip
    out = tmp_path / "policies"
    # report=policies' own online setup, with two of its four policies (a preset's variants
    # can be extended on the command line, not dropped: start from a preset without them) and
    # its one-step pairs (the objects preset's are up to 4 apart; curious fits the one-step ones)
    cfg = make_config(*user, "report=objects", "report.mode=online", "report.methods=[ciper]", "report.ceiling=null",
                      "report.method_overrides.ciper=['method.time_offset=1']",
                      "report.seeds=[0]", "report.steps=6", "report.batch_size=8",
                      "+report.variants.random=['policy=random']", "+report.variants.curious=['policy=curious']",
                      "report.ours=ciper@curious", "report.baseline=ciper@random",
                      "report.comparisons=[[ciper@curious,ciper@random]]", run_dir=out)  # fmt: skip
    payload = build_report(cfg, user)
    assert {"ciper@random", "ciper@curious"} <= set(payload["per_seed"])
    text = (out / "report.md").read_text()
    assert "## Actions taken" in text and "## Throughput" in text and "## Error model of ciper@curious" in text
    assert "| metric | ciper@curious − ciper@random per seed |" in text
    assert (out / "actions.png").stat().st_size > 1000 and (out / "error_model_ciper_curious.png").stat().st_size > 1000
    actions = json.loads((out / "runs" / "ciper_random_seed0" / "actions.json").read_text())
    assert np.asarray(actions["counts"]).sum() > 0
