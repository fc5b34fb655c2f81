"""``policy=curious``, learner side: fit the error model from the batches trained on.

:class:`CuriosityCallback` (a ``learner.training.loop.StepCallback``) reads, at no extra
forward cost, the per-pair errors of the method's action prediction on the very batch it has
just trained on (``learner.methods.base.PredictsAction``), turns each offset-1 pair's
relative change into the normalised action that produced it
(``relative_change / action_max_steps``), feeds :class:`agent.curious.ErrorModelFitter` and
publishes the fit every ``policy.curious_refresh_steps`` steps to
``<run>/curious/error_model.npz`` for the collectors' :class:`agent.curious.CuriousPolicy`.
:func:`curious_training` wires both sides for ``train``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from agent.atomic_files import write_bytes_atomic
from agent.curious import (
    LENGTHSCALE,
    MIN_SAMPLES,
    NUM_FEATURES,
    RIDGE,
    STATUS_FILE,
    CuriousPolicyFactory,
    ErrorModel,
    ErrorModelFitter,
    load_error_model,
    model_path_of,
    publish_error_model,
)
from agent.view_pairs import ViewPairs
from conf.schema import CiperConfig
from envs.world import World
from learner.data.images import model_input
from learner.methods.base import PredictsAction
from learner.methods.registry import predicts_action
from learner.training.learner import Learner

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"  # beside the published model: one entry per publication
LANDSCAPE_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)  # normalised actions at which the landscape is read


def error_landscape(model: ErrorModel, names: list[str]) -> dict[str, list[float]]:
    """The model's predicted error along each action axis (the others at 0), at ``LANDSCAPE_GRID``."""
    grid = np.asarray(LANDSCAPE_GRID)
    landscape = {}
    for axis, name in enumerate(names):
        x = np.zeros((grid.size, len(names)))
        x[:, axis] = grid
        landscape[name] = [float(v) for v in model.predict(x)[0]]
    return landscape


class CuriosityCallback:
    """``learner.training.loop.StepCallback`` that fits and publishes the error model.

    Per-pair errors are the squared errors of the method's action prediction against the
    normalised target, averaged over the continuous action columns, as the method recorded
    them during the training step itself (before its update). When they do not match the
    batch (none recorded yet, or a compiled model that skipped the record) one no-grad
    eval-mode forward of the batch, without augmentation, replaces them. Only pairs one step
    apart are used: their relative change is the action that was taken. Only rank 0 fits and
    publishes; the other ranks' collectors read the same file.
    """

    def __init__(
        self, world: World, action_set: str, model_path: str | Path, refresh_steps: int, seed: int = 0,
        min_samples: float = MIN_SAMPLES, num_features: int = NUM_FEATURES, lengthscale: float = LENGTHSCALE,
        ridge: float = RIDGE,
    ) -> None:  # fmt: skip
        if refresh_steps < 1:
            raise ValueError(f"policy.curious_refresh_steps={refresh_steps!r}: expected an int >= 1")
        self.world = world
        self.action_set = action_set
        self.max_steps = self.world.action_max_steps(action_set)
        self.names = [d.name for d in self.world.action_dims(action_set)]
        self.model_path = Path(model_path)
        self.refresh_steps, self.min_samples = int(refresh_steps), float(min_samples)
        # Forget with a half-life of one refresh period (at least 10 steps): a published
        # model describes roughly the head of the last period.
        half_life = max(self.refresh_steps, 10)
        self.fitter = ErrorModelFitter(len(self.max_steps), seed=seed, num_features=num_features,
                                       lengthscale=lengthscale, ridge=ridge, forgetting=0.5 ** (1.0 / half_life))  # fmt: skip
        self.version = self._last_version()
        self.publications = 0
        self.forward_fallbacks = 0

    def _last_version(self) -> int:
        # A resumed run keeps numbering where the previous invocation stopped.
        try:
            return load_error_model(self.model_path).version
        except (FileNotFoundError, ValueError):
            return 0

    def on_step(self, step: int, learner: Learner, pairs: ViewPairs) -> None:
        if not learner.context.is_main:
            return
        method = learner.model.method
        if not isinstance(method, PredictsAction):
            raise ValueError(f"method={learner.cfg.method.name!r} predicts no action: policy=curious needs one that does")
        errors = method.action_errors()
        if errors is None or errors.shape[0] != len(pairs):
            self.forward_fallbacks += 1
            errors = self._forward(learner, pairs)
        errors = errors.cpu().numpy().astype(np.float64)
        one_step = np.asarray(pairs.offset) == 1
        if one_step.any():
            change = self.world.relative_change(pairs.state_a[one_step], pairs.state_b[one_step], self.action_set)
            self.fitter.update(np.clip(change / self.max_steps, -1.0, 1.0), errors[one_step])
        if step % self.refresh_steps == 0 and self.fitter.effective_samples >= self.min_samples:
            self.publish(step)

    def publish(self, step: int) -> ErrorModel:
        """Publish the current fit, a small status JSON next to it, and append the model's
        error landscape to ``history.json`` (how the model changed over training)."""
        self.version += 1
        model = self.fitter.solve(self.version, step)
        publish_error_model(model, self.model_path)
        self.publications += 1
        status = {"version": model.version, "learner_step": step, "publications": self.publications,
                  "effective_samples": model.effective_samples, "mean_error": model.mean_error,
                  "noise_std": float(np.sqrt(model.noise_var)), "forward_fallbacks": self.forward_fallbacks}  # fmt: skip
        write_bytes_atomic(self.model_path.with_name(STATUS_FILE), lambda file: file.write(json.dumps(status).encode()))
        history_path = self.model_path.with_name(HISTORY_FILE)
        history = json.loads(history_path.read_text()) if history_path.is_file() else []
        history = [entry for entry in history if entry["learner_step"] < step]  # a resumed run rewrites its future
        history.append({**status, "landscape": error_landscape(model, self.names)})
        write_bytes_atomic(history_path, lambda file: file.write(json.dumps(history).encode()))
        log.debug("published error model v%d at step %d", model.version, step)
        return model

    @staticmethod
    def _forward(learner: Learner, pairs: ViewPairs) -> torch.Tensor:
        """The method's per-pair action errors of ``pairs`` from one no-grad eval-mode forward
        without augmentation: it would advance the learner's augmentation generator and
        change the batches of a resumed run. Unaugmented views' augmentation columns of the
        target are 0 (no change)."""
        model, n = learner.model, len(pairs)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                views = torch.from_numpy(np.concatenate([pairs.view_a, pairs.view_b])).to(learner.device)
                images = model_input(views, channels_last=learner.channels_last)
                unaugmented = torch.zeros(2 * n, learner.layout.dim - learner.layout.action_dim, device=learner.device)
                model(images, learner.targets(pairs, unaugmented if unaugmented.shape[1] else None))
        finally:
            model.train(was_training)
        return model.method.action_errors()


# ---------------------------------------------------------------- wiring


def _check_curious_config(cfg: CiperConfig) -> None:
    method = cfg.method.name
    if not predicts_action(method):
        raise ValueError(
            f"method={method!r} has no prediction head: policy=curious scores actions by the "
            "prediction head's error; use method=ciper or method=predict, or another policy"
        )
    if cfg.train.mode != "online":
        raise ValueError(f"train.mode={cfg.train.mode!r}: policy=curious steers live collectors; expected online")


def curious_policy_factory(cfg: CiperConfig, run_dir: str | Path) -> CuriousPolicyFactory:
    """The picklable collector-side factory for ``cfg`` (a ``policy_factory`` for ``train``).

    It only acts curiously if :class:`CuriosityCallback` publishes models: use
    :func:`curious_training` to get both. Raises ValueError for methods without a
    prediction head (simclr, simclr_tt) and for offline training.
    """
    _check_curious_config(cfg)
    return CuriousPolicyFactory(str(model_path_of(run_dir)), cfg.env.id)


def curious_training(cfg: CiperConfig, world: World, run_dir: str | Path) -> tuple[CuriousPolicyFactory, CuriosityCallback]:
    """``(policy_factory, callback)`` for ``train(cfg, run_dir, policy_factory=..., callbacks=[callback])``;
    ``world`` is the world of ``cfg.env.id``."""
    factory = curious_policy_factory(cfg, run_dir)
    callback = CuriosityCallback(
        world, cfg.env.action_set, factory.model_path,
        refresh_steps=cfg.policy.curious_refresh_steps, seed=cfg.train.seed, num_features=cfg.policy.curious_features,
        lengthscale=cfg.policy.curious_lengthscale, ridge=cfg.policy.curious_ridge,
    )  # fmt: skip
    return factory, callback


def policy_hooks(cfg: CiperConfig, world: World, run_dir: str | Path) -> tuple[CuriousPolicyFactory | None, list[CuriosityCallback]]:
    """What ``train`` needs beside the config for ``cfg.policy``: for ``policy=curious`` the
    collectors' policy factory and the callback that feeds it (``curious_training``); for every
    other policy nothing (the collectors build it from ``cfg.policy``)."""
    if cfg.policy.name != "curious":
        return None, []
    factory, callback = curious_training(cfg, world, run_dir)
    return factory, [callback]
