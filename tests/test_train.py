"""The one training loop: every method learns, resume is exact, bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

import envs
import learner.training.learner as learner_module
from learner.nets.pair_model import PairModel
from learner.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from learner.training.loop import TrainingDiverged, train

TINY = ("env.image_size=32", "model.width=8", "model.proj_hidden=64", "model.proj_dim=32",
        "model.pred_hidden=64", "train.batch_size=32", "train.evaluate=false", "train.mode=offline",
        "train.log_every=5", "optim.warmup_steps=2")  # fmt: skip


def offline(make_config, dataset, *overrides, run_dir=None):
    return make_config(*TINY, f"train.dataset={dataset}", *overrides, run_dir=run_dir)


@pytest.mark.parametrize("method", ["ciper", "simclr", "simclr_tt", "predict"])
def test_every_method_lowers_its_loss(make_config, tiny_dataset, tmp_path, method):
    cfg = offline(make_config, tiny_dataset, f"method={method}", "train.steps=40", "optim.lr=2e-3")
    metrics = train(cfg, tmp_path / method)
    history = json.loads((tmp_path / method / "loss_history.json").read_text())
    assert len(history) == 40 and metrics["completed"]
    first = np.mean([h["loss"] for h in history[:5]])
    last = np.mean([h["loss"] for h in history[-5:]])
    assert last < first, f"{method}: loss {first:.4f} -> {last:.4f}"
    expected_terms = {"ciper": {"contrastive", "prediction"}, "simclr": {"contrastive"},
                      "simclr_tt": {"contrastive"}, "predict": {"prediction"}}[method]  # fmt: skip
    assert set(history[0]) == {"step", "loss"} | expected_terms
    assert (tmp_path / method / "metrics.json").exists()
    assert any((tmp_path / method / "tensorboard").iterdir())


def test_stop_and_resume_gives_the_same_losses_as_an_uninterrupted_run(make_config, tiny_dataset, tmp_path):
    # Every augmentation on: the resumed run must draw the same crops, flips and colours.
    steps = ("train.steps=16", "train.checkpoint_every=100", "method.augment_crop=true",
             "method.augment_color=true", "method.augment_flip=true")  # fmt: skip
    straight = train(offline(make_config, tiny_dataset, *steps), tmp_path / "straight")
    interrupted_dir = tmp_path / "interrupted"
    first = train(offline(make_config, tiny_dataset, *steps, "train.stop_after=7"), interrupted_dir)
    assert first["steps"] == 7 and not first["completed"]
    resumed = train(offline(make_config, tiny_dataset, *steps), interrupted_dir)
    assert resumed["steps"] == 16 and straight["completed"]
    a = json.loads((tmp_path / "straight" / "loss_history.json").read_text())
    b = json.loads((interrupted_dir / "loss_history.json").read_text())
    assert [h["step"] for h in b] == list(range(1, 17))
    np.testing.assert_allclose([h["loss"] for h in b], [h["loss"] for h in a], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("method", "offsets"), [("simclr", {0}), ("simclr_tt", {1, 2, 3, 4}), ("ciper", {1})])
def test_each_method_trains_on_its_own_pairs(make_config, tiny_dataset, method, offsets):
    from learner.data.pair_sources import make_pair_source

    cfg = offline(make_config, tiny_dataset, f"method={method}", "train.batch_size=256")
    # Every method sees the standard augmentations (SimCLR, SimCLR-TT, CIPER alike).
    assert cfg.method.augment_crop and cfg.method.augment_color
    source = make_pair_source(cfg, envs.world_module(cfg.env.id), seed=0)
    try:
        pairs = source.next_pairs()
    finally:
        source.close()
    assert set(pairs.offset.tolist()) == offsets
    if method == "simclr":  # SimCLR: two copies of one view, made different only by augmentation
        np.testing.assert_array_equal(pairs.view_a, pairs.view_b)


def test_augmentation_parameters_reach_the_prediction_target(make_config, tiny_dataset, tmp_path, monkeypatch):
    from learner.data.augment import COLOR_PARAMETERS, CROP_PARAMETERS, ViewAugmentation

    seen = {}
    real_forward, real_targets = ViewAugmentation.forward, learner_module.pair_targets

    def recording_forward(self, images):
        seen["images"], seen["parameters"] = real_forward(self, images)
        return seen["images"], seen["parameters"]

    def recording_targets(*args, **kwargs):
        targets = real_targets(*args, **kwargs)
        seen["target"] = targets.target
        return targets

    monkeypatch.setattr(ViewAugmentation, "forward", recording_forward)
    monkeypatch.setattr(learner_module, "pair_targets", recording_targets)
    cfg = offline(make_config, tiny_dataset, "method=ciper", "train.steps=1", "method.augment_flip=true")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["prediction_target"][-10:] == [f"delta_{n}" for n in (*CROP_PARAMETERS, "flip", *COLOR_PARAMETERS)]
    n, params, target = cfg.train.batch_size, seen["parameters"], seen["target"]
    a = len(envs.world_module(cfg.env.id).relative_action_names(cfg.env.action_set))
    assert params.shape == (2 * n, 10) and target.shape == (n, a + 10)  # action, crop 4, flip 1, colour 5
    torch.testing.assert_close(target[:, a:], params[n:] - params[:n])
    assert (target[:, a:].abs().sum(0) > 0).all()  # every column varies: each augmentation is drawn
    payload = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert len(payload["architecture"]["target"]["names"]) == a + 10 and payload["augment_generator"] is not None


def test_checkpoint_of_another_architecture_is_named(make_config, tiny_dataset, tmp_path):
    train(offline(make_config, tiny_dataset, "train.steps=2"), tmp_path / "run")
    with pytest.raises(ValueError, match="width: checkpoint 8 vs config 12"):
        train(offline(make_config, tiny_dataset, "train.steps=4", "model.width=12"), tmp_path / "run")


def test_checkpoint_of_an_older_encoder_version_is_named(make_config, tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    train(offline(make_config, tiny_dataset, "train.steps=2"), run_dir)
    path = run_dir / "checkpoints" / "last.pt"
    payload = load_checkpoint(path)
    del payload["architecture"]["encoder_version"]  # as saved before the version existed
    save_checkpoint(path, payload)
    with pytest.raises(ValueError, match="encoder_version: checkpoint None vs config 2"):
        train(offline(make_config, tiny_dataset, "train.steps=4"), run_dir)
    with pytest.raises(ValueError, match="encoder_version=None.*retrain"):
        load_model(path)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(make_config, tiny_dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real = PairModel.forward
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 6:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(PairModel, "forward", poisoned)
    cfg = offline(make_config, tiny_dataset, "train.steps=10", "train.checkpoint_every=4")
    with pytest.raises(TrainingDiverged, match="at step 6"):
        train(cfg, run_dir)
    payload = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert payload["step"] == 4
    assert all(torch.isfinite(p).all() for p in payload["model"].values() if p.is_floating_point())


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_a_pickle_payload_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": _Exploit(str(marker))}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_write_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, {"step": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_misspelt_key_and_unknown_method_are_hydra_errors(make_config):
    with pytest.raises(ConfigCompositionException, match="tmperature"):
        make_config("method.tmperature=0.2")
    with pytest.raises(ConfigCompositionException, match="simclrr"):
        make_config("method=simclrr")


ONLINE = ("train.steps=6", "train.batch_size=16", "buffer.warmup_views=64", "buffer.capacity=2000",
          "collector.num_envs=2", "collector.num_workers=1", "collector.vectorization=sync",
          "env.episode_steps=16")  # fmt: skip


@pytest.mark.slow
def test_tiny_online_run_trains_from_live_collectors(make_config, tmp_path):
    cfg = make_config(*TINY[:-3], "train.evaluate=false", "train.mode=online", *ONLINE)
    metrics = train(cfg, tmp_path / "online")
    assert metrics["completed"] and metrics["data"]["views_collected"] >= 64
    assert 0.0 <= metrics["data_wait_fraction"] <= 1.0
    assert (tmp_path / "online" / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
def test_image_view_with_a_discrete_flip_column_trains_online(make_config, tmp_path):
    cfg = make_config(*TINY[:-3], "train.evaluate=false", "train.mode=online", *ONLINE,
                      "env.id=ciper/ImageView-v0", "env.action_set=full",
                      "method.augment_crop=false", "method.augment_color=false")  # fmt: skip
    metrics = train(cfg, tmp_path / "image")
    assert metrics["completed"]
    assert np.isfinite(metrics["losses_last"]["prediction"])


def test_discrete_columns_are_classified_not_regressed():
    from learner.methods.action_prediction import ActionPrediction
    from learner.methods.base import TargetLayout

    layout = TargetLayout(("a", "b", "flip"), (False, False, True), 3, ("pose",), 1)
    prediction = ActionPrediction(feat_dim=2, hidden=(8,), layout=layout)

    class FixedPrediction(torch.nn.Module):
        def forward(self, features):
            return torch.tensor([[0.0, 0.0, 20.0], [0.0, 0.0, -20.0]])

    prediction.head = FixedPrediction()
    target = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.0]])
    loss = prediction(torch.zeros(2, 2), torch.zeros(2, 2), target)
    # confident and right on the flip column: only the regression part (normalised targets
    # are +-1, predictions 0 -> MSE 1) remains
    assert loss.item() == pytest.approx(1.0, abs=1e-3)
