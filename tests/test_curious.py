"""policy=curious: the error model fits, the policy follows it, publication is safe, and a
tiny online run publishes models that the collector processes pick up."""

from __future__ import annotations

import contextlib
import json
import os
import pickle

import numpy as np
import pytest
from gymnasium import spaces
from threadpoolctl import threadpool_info

import agent.curious as curious
from agent.curious import (
    CuriousPolicy,
    ErrorModelFitter,
    load_error_model,
    model_path_of,
    publish_error_model,
)
from agent.policies import RandomPolicy
from conf.validate import ConfigError, validate_config
from envs import scene_state
from learner.evaluation.plots import error_model_history
from learner.training.action_stats import ActionHistogram, load_actions
from learner.training.curiosity import (
    HISTORY_FILE,
    LANDSCAPE_GRID,
    CuriosityCallback,
    curious_policy_factory,
    curious_training,
    policy_hooks,
)

BOX = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)


def fitted_abs_a0_model(version: int = 1):
    """An error model fitted to the synthetic landscape error = |a_0| (plus noise)."""
    rng = np.random.default_rng(0)
    fitter = ErrorModelFitter(3, seed=1, forgetting=0.99)
    for _ in range(30):
        x = rng.uniform(-1.0, 1.0, size=(64, 3))
        fitter.update(x, np.abs(x[:, 0]) + rng.normal(0.0, 0.1, size=64))
    return fitter.solve(version=version, learner_step=30)


def test_error_model_fits_a_known_landscape():
    model = fitted_abs_a0_model()
    x = np.random.default_rng(5).uniform(-1.0, 1.0, size=(2000, 3))
    mean, std = model.predict(x)
    truth = np.abs(x[:, 0])
    assert np.corrcoef(mean, truth)[0, 1] > 0.97
    assert np.mean(np.abs(mean - truth)) < 0.06
    assert np.sqrt(model.noise_var) == pytest.approx(0.1, rel=0.2)  # the noise it was given
    assert np.all(std >= 0.0)


def test_policy_picks_the_candidates_with_large_error(tmp_path):
    path = tmp_path / "curious" / "error_model.npz"
    publish_error_model(fitted_abs_a0_model(), path)
    policy = CuriousPolicy(BOX, num_envs=4, model_path=path, seed=0, candidates=8, epsilon=0.0)
    random = RandomPolicy(BOX, num_envs=4, seed=0)
    curious = np.concatenate([policy.act(None, {}) for _ in range(100)])  # (400, 3)
    random_a0 = np.concatenate([random.act(None, {})[:, 0] for _ in range(100)])
    assert policy.loads == 1 and policy.model is not None and policy.model.version == 1
    # The max of 8 uniform |a_0| has mean 8/9; a uniform draw 1/2.
    assert np.mean(np.abs(curious[:, 0])) > 0.8 > 0.6 > np.mean(np.abs(random_a0))
    # The other dimensions stay uniform (mean |a| = 1/2, standard error ~0.015 over 400
    # draws): the error does not depend on them, so curiosity has no reason to prefer them.
    np.testing.assert_allclose(np.mean(np.abs(curious[:, 1:]), axis=0), 0.5, atol=0.07)


def test_before_any_model_the_policy_is_the_random_policy(tmp_path):
    policy = CuriousPolicy(BOX, num_envs=3, model_path=tmp_path / "none.npz", seed=7)
    random = RandomPolicy(BOX, num_envs=3, seed=7)
    for _ in range(20):
        action = policy.act(None, {})
        assert action.shape == (3, 3) and action.dtype == np.float32
        assert np.all(action >= BOX.low) and np.all(action <= BOX.high)
        np.testing.assert_array_equal(action, random.act(None, {}))
    assert policy.model is None and policy.loads == 0


def test_publication_is_atomic_and_reloaded_on_change(tmp_path):
    path = tmp_path / "curious" / "error_model.npz"
    publish_error_model(fitted_abs_a0_model(version=1), path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["error_model.npz"]  # no temp file left
    policy = CuriousPolicy(BOX, num_envs=2, model_path=path, seed=0)
    policy.act(None, {})
    policy.act(None, {})
    assert policy.loads == 1  # unchanged file: not reloaded
    publish_error_model(fitted_abs_a0_model(version=2), path)
    policy.act(None, {})
    assert policy.loads == 2 and policy.model.version == 2
    pickup = json.loads((path.parent / "pickups" / f"{os.getpid()}.json").read_text())
    assert pickup["version"] == 2 and pickup["loads"] == 2


def test_a_pickle_in_the_model_file_is_refused(tmp_path):
    path = tmp_path / "error_model.npz"
    arrays = fitted_abs_a0_model().arrays()
    arrays["coef"] = np.array([{"payload": "would run on load"}], dtype=object)
    with open(path, "wb") as file:
        np.savez(file, **arrays)  # np.savez pickles object arrays
    with pytest.raises(ValueError, match="refused to load"):
        load_error_model(path)
    with pytest.raises(ValueError, match="refused to load"):
        CuriousPolicy(BOX, num_envs=1, model_path=path).act(None, {})


def test_methods_without_a_prediction_head_are_refused(make_config, tmp_path):
    for method in ("simclr", "simclr_tt"):
        cfg = make_config(f"method={method}", "policy=curious")
        with pytest.raises(ValueError, match=f"method='{method}' has no prediction head"):
            curious_policy_factory(cfg, tmp_path)


def test_factory_is_picklable_and_builds_the_policy(make_config, tmp_path):
    cfg = make_config("policy=curious", "policy.curious_candidates=5")
    factory = pickle.loads(pickle.dumps(curious_policy_factory(cfg, tmp_path)))
    policy = factory(cfg.policy, BOX, 2, seed=0, action_set="camera")
    assert isinstance(policy, CuriousPolicy) and policy.candidates == 5
    assert policy.model_path == model_path_of(tmp_path)


def test_the_five_constants_are_config_keys_that_reach_the_policy_and_the_error_model(make_config, tmp_path):
    cfg = make_config("policy=curious", "policy.curious_epsilon=0.3", "policy.curious_ucb_beta=2.5",
                      "policy.curious_features=16", "policy.curious_lengthscale=0.25", "policy.curious_ridge=4.0")  # fmt: skip
    factory, callbacks = policy_hooks(cfg, scene_state, tmp_path)
    policy = factory(cfg.policy, BOX, 1, seed=0, action_set="camera")
    assert (policy.epsilon, policy.ucb_beta) == (0.3, 2.5)
    (callback,) = callbacks
    fitter = callback.fitter
    assert (fitter.num_features, fitter.lengthscale, fitter.ridge) == (16, 0.25, 4.0)
    assert policy_hooks(make_config("policy=random"), scene_state, tmp_path) == (None, [])
    for key, bad in (("curious_epsilon", 1.5), ("curious_lengthscale", 0.0), ("curious_ridge", -1.0),
                     ("curious_features", 0), ("curious_ucb_beta", -0.5)):  # fmt: skip
        with pytest.raises(ConfigError, match=f"policy.{key}="):
            validate_config(make_config("policy=curious", f"policy.{key}={bad}"))


def test_tiny_online_run_publishes_models_the_collectors_pick_up(make_config, tmp_path):
    from learner.training.loop import train

    run_dir = tmp_path / "run"
    cfg = make_config(
        "policy=curious", "policy.curious_refresh_steps=3", "env.image_size=32", "model.width=8",
        "model.proj_hidden=64", "model.proj_dim=32", "model.pred_hidden=64", "train.batch_size=16",
        "train.steps=24", "train.evaluate=false", "collector.num_workers=1", "collector.num_envs=1",
        "collector.vectorization=sync", "buffer.warmup_views=64", "train.replay_ratio=1.0",
        "optim.warmup_steps=2", run_dir=run_dir,
    )  # fmt: skip
    factory, callback = curious_training(cfg, scene_state, run_dir)
    assert isinstance(callback, CuriosityCallback)
    taken = ActionHistogram(scene_state, cfg.env.action_set)
    metrics = train(cfg, run_dir, policy_factory=factory, callbacks=[callback, taken])
    assert metrics["completed"]
    # Every publication is in the history, with the landscape along each action axis.
    history = json.loads((model_path_of(run_dir).with_name(HISTORY_FILE)).read_text())
    assert len(history) == callback.publications
    assert [entry["learner_step"] for entry in history] == sorted(entry["learner_step"] for entry in history)
    names = [d.name for d in scene_state.action_dims(cfg.env.action_set)]
    assert all(list(entry["landscape"]) == names for entry in history)
    assert all(len(values) == len(LANDSCAPE_GRID) for entry in history for values in entry["landscape"].values())
    assert error_model_history(history, tmp_path / "history.png").stat().st_size > 0
    # The actions of the one-step pairs it trained on, counted per column; saving twice adds up.
    taken.save(run_dir)
    record = load_actions(run_dir)
    assert record["columns"] == names and np.asarray(record["counts"]).sum() > 0
    taken.save(run_dir)
    assert np.asarray(load_actions(run_dir)["counts"]).sum() == 2 * np.asarray(record["counts"]).sum()
    assert callback.publications >= 4  # every 3rd step once MIN_SAMPLES pairs are in
    assert callback.forward_fallbacks == 0  # the method recorded its errors in every training step
    model = load_error_model(model_path_of(run_dir))
    assert model.version == callback.publications and model.learner_step == 24
    pickups = [json.loads(p.read_text()) for p in (run_dir / "curious" / "pickups").glob("*.json")]
    assert pickups and max(p["version"] for p in pickups) >= 1
    assert all(p["pid"] != os.getpid() for p in pickups)  # read in the collector process


def test_the_error_model_math_runs_on_one_blas_thread(monkeypatch):
    """A multi-threaded BLAS on these small matrices, against a learner and collectors that
    hold every core, made an update 100x slower (bench/curious_overhead.py): update, solve and
    predict each run inside the one-thread limit."""
    entered: list[int] = []
    original = curious._one_blas_thread

    @contextlib.contextmanager
    def recording():
        with original():
            entered.append(max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1))
            yield

    monkeypatch.setattr(curious, "_one_blas_thread", recording)
    fitter = ErrorModelFitter(3, seed=0)
    fitter.update(np.zeros((4, 3)), np.ones(4))
    model = fitter.solve(1, 1)
    model.predict(np.zeros((5, 3)))
    assert entered == [1, 1, 1]
