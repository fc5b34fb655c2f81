"""``policy=curious``: an active observer that moves where the prediction head is worst.

The learner side (:class:`CuriosityCallback`, a ``learner.train.StepCallback``) reads, at no
extra forward cost, the per-pair errors of the prediction head on the very batch it has
just trained on (forward hooks on the head and on the target normaliser), turns each
offset-1 pair's relative change into the normalised action that produced it
(``relative_change / action_max_steps``), and fits an error model ``error(action)``: ridge
regression on random Fourier features, with exponential forgetting so that it describes
the *current* head rather than its history. Every ``policy.curious_refresh_steps`` learner
steps it publishes the model (~140 kB of float arrays) atomically to
``run_dir/curious/error_model.npz`` (temporary file + ``os.replace``; no object arrays).
The collector side (:class:`CuriousPolicy`, numpy only, built in each collector process by
the picklable :class:`CuriousPolicyFactory`) reloads that file when it changes, draws
``policy.curious_candidates`` uniform candidate actions per env, and takes the one with
the highest predicted error plus an upper-confidence bonus; with probability ``epsilon``
it takes a uniform action instead, so regions the model is wrong about keep being
visited. Before the first publication it is exactly :class:`agent.policies.RandomPolicy`.
Scoring K candidates costs K feature evaluations, not K renders. Every load is recorded in
``run_dir/curious/pickups/<pid>.json``, so a run shows which model versions its collectors used.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

import envs

if TYPE_CHECKING:  # torch stays out of collector processes, which import this module
    from agent.view_pairs import ViewPairs
    from learner.train import Learner

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "error_model.npz"
STATUS_FILE = "status.json"
PICKUP_DIR = "pickups"
# Error-model and policy constants. They are not config keys (conf/schema.py only has
# curious_candidates and curious_refresh_steps); each is a constructor argument here.
NUM_FEATURES = 128  # random Fourier features of the normalised action
LENGTHSCALE = 0.5  # in normalised action units: the box [-1, 1] spans ~4 lengthscales
RIDGE = 1.0  # prior precision; one sample adds ~2 to the feature Gram diagonal sum
MIN_SAMPLES = 32.0  # effective samples before the first publication
EPSILON = 0.1  # share of uniform actions among the curious ones (coverage)
UCB_BETA = 1.0  # weight of the predictive standard deviation in a candidate's score
FLIP_THRESHOLD = 0.5  # envs.image_state: a normalised flip action above this toggles


@dataclass(frozen=True)
class ErrorModel:
    """A published error model: ``error(x) = phi(x) @ coef``, with a ridge posterior.

    ``phi(x) = [1, sqrt(2/D) cos(x @ rff_weights.T + rff_phase)]`` for normalised actions
    ``x`` (..., A); ``precision_inverse`` (F, F) times ``noise_var`` is the posterior
    covariance of ``coef`` (F,), which gives the confidence bonus.
    """

    rff_weights: np.ndarray  # (D, A)
    rff_phase: np.ndarray  # (D,)
    coef: np.ndarray  # (F,) = (D + 1,)
    precision_inverse: np.ndarray  # (F, F)
    noise_var: float
    version: int  # increases with every publication of a run
    learner_step: int  # learner step whose head the model describes
    effective_samples: float  # forgetting-weighted number of pairs behind the fit
    mean_error: float  # forgetting-weighted mean per-pair error

    @property
    def action_dim(self) -> int:
        return int(self.rff_weights.shape[1])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted error and its standard deviation at normalised actions ``x`` (..., A)."""
        phi = rff_features(x, self.rff_weights, self.rff_phase)  # (..., F)
        mean = phi @ self.coef
        variance = self.noise_var * np.einsum("...f,fg,...g->...", phi, self.precision_inverse, phi)
        return mean, np.sqrt(np.maximum(variance, 0.0))

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain numeric arrays for ``np.savez`` (nothing that needs pickle)."""
        return {
            "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
            "rff_weights": self.rff_weights.astype(np.float64),
            "rff_phase": self.rff_phase.astype(np.float64),
            "coef": self.coef.astype(np.float64),
            "precision_inverse": self.precision_inverse.astype(np.float64),
            "noise_var": np.asarray(self.noise_var, dtype=np.float64),
            "version": np.asarray(self.version, dtype=np.int64),
            "learner_step": np.asarray(self.learner_step, dtype=np.int64),
            "effective_samples": np.asarray(self.effective_samples, dtype=np.float64),
            "mean_error": np.asarray(self.mean_error, dtype=np.float64),
        }


def rff_features(x: np.ndarray, weights: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Random Fourier features (Rahimi & Recht 2007) of ``x`` (..., A) plus a constant: (..., D + 1)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] != weights.shape[1]:
        raise ValueError(f"x.shape={x.shape}: expected last dimension {weights.shape[1]} (the action size)")
    cosines = np.sqrt(2.0 / weights.shape[0]) * np.cos(x @ weights.T + phase)
    return np.concatenate([np.ones(x.shape[:-1] + (1,)), cosines], axis=-1)


class ErrorModelFitter:
    """Exponentially forgetting ridge regression of per-pair errors on action features.

    Each :meth:`update` first multiplies the accumulated statistics by ``forgetting`` and
    then adds the new batch, so a sample's weight halves every ``ln 2 / -ln(forgetting)``
    updates: the fit follows the head as it learns instead of averaging over its past.
    """

    def __init__(
        self,
        action_dim: int,
        seed: int = 0,
        num_features: int = NUM_FEATURES,
        lengthscale: float = LENGTHSCALE,
        ridge: float = RIDGE,
        forgetting: float = 0.99,
    ) -> None:
        if action_dim < 1 or num_features < 1:
            raise ValueError(f"action_dim={action_dim}, num_features={num_features}: expected both >= 1")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting={forgetting!r}: expected a factor in (0, 1]")
        if lengthscale <= 0.0 or ridge <= 0.0:
            raise ValueError(f"lengthscale={lengthscale!r}, ridge={ridge!r}: expected both > 0")
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(0.0, 1.0 / lengthscale, size=(num_features, action_dim))
        self.phase = rng.uniform(0.0, 2.0 * np.pi, size=num_features)
        self.ridge, self.forgetting = float(ridge), float(forgetting)
        size = num_features + 1
        self.gram = np.zeros((size, size))  # sum w phi phi^T
        self.moment = np.zeros(size)  # sum w phi e
        self.sum_sq = 0.0  # sum w e^2
        self.sum_error = 0.0  # sum w e
        self.effective_samples = 0.0  # sum w

    @property
    def action_dim(self) -> int:
        return int(self.weights.shape[1])

    def update(self, x: np.ndarray, error: np.ndarray) -> None:
        """Forget a little, then add pairs with normalised actions ``x`` (N, A) and errors (N,)."""
        x = np.asarray(x, dtype=np.float64)
        error = np.asarray(error, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.action_dim or error.shape != x.shape[:1]:
            raise ValueError(
                f"x.shape={x.shape}, error.shape={error.shape}: expected (N, {self.action_dim}) and (N,)"
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(error))):
            raise ValueError("x and error must be finite")
        phi = rff_features(x, self.weights, self.phase)
        f = self.forgetting
        self.gram = f * self.gram + phi.T @ phi
        self.moment = f * self.moment + phi.T @ error
        self.sum_sq = f * self.sum_sq + float(error @ error)
        self.sum_error = f * self.sum_error + float(error.sum())
        self.effective_samples = f * self.effective_samples + float(error.size)

    def solve(self, version: int, learner_step: int) -> ErrorModel:
        """The current ridge solution as a publishable :class:`ErrorModel`."""
        precision = self.gram + self.ridge * np.eye(self.gram.shape[0])
        precision_inverse = np.linalg.inv(precision)
        coef = precision_inverse @ self.moment
        # Weighted residual sum of squares, expanded so no samples need to be kept.
        residual = self.sum_sq - 2.0 * coef @ self.moment + coef @ self.gram @ coef
        noise_var = max(residual, 0.0) / max(self.effective_samples, 1.0)
        return ErrorModel(
            rff_weights=self.weights.copy(), rff_phase=self.phase.copy(), coef=coef,
            precision_inverse=precision_inverse, noise_var=float(noise_var), version=int(version),
            learner_step=int(learner_step), effective_samples=self.effective_samples,
            mean_error=self.sum_error / max(self.effective_samples, 1e-12),
        )  # fmt: skip


# ---------------------------------------------------------------- publication


def _write_atomically(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary file next to ``path``, then rename it over ``path``:
    a reader sees the old file or the new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def publish_error_model(model: ErrorModel, path: str | Path) -> None:
    """Write ``model`` to ``path`` (.npz) atomically, refusing anything that needs pickle."""
    arrays = model.arrays()
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"{name}: dtype {array.dtype} would need pickle; expected a numeric array")
    _write_atomically(Path(path), lambda file: np.savez(file, **arrays))


def load_error_model(path: str | Path) -> ErrorModel:
    """Read an error model written by :func:`publish_error_model`; never unpickles.

    Raises ValueError naming the file if it holds object arrays (a pickle), lacks a field
    or has another format version.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ValueError as error:
        raise ValueError(f"{path}: refused to load ({error}); expected plain numeric arrays") from error
    fields = set(ErrorModel.__dataclass_fields__) | {"format_version"}
    missing = sorted(fields - set(arrays))
    if missing:
        raise ValueError(f"{path}: missing fields {missing}: not an error model")
    if int(arrays["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version={int(arrays['format_version'])}, expected {FORMAT_VERSION}")
    model = ErrorModel(
        rff_weights=arrays["rff_weights"], rff_phase=arrays["rff_phase"], coef=arrays["coef"],
        precision_inverse=arrays["precision_inverse"], noise_var=float(arrays["noise_var"]),
        version=int(arrays["version"]), learner_step=int(arrays["learner_step"]),
        effective_samples=float(arrays["effective_samples"]), mean_error=float(arrays["mean_error"]),
    )  # fmt: skip
    features = model.rff_weights.shape[0] + 1
    if model.coef.shape != (features,) or model.precision_inverse.shape != (features, features):
        raise ValueError(f"{path}: coef {model.coef.shape} / precision_inverse {model.precision_inverse.shape} "
                         f"do not match {features} features")  # fmt: skip
    return model


# ---------------------------------------------------------------- collector side


class CuriousPolicy:
    """Picks, per env, the candidate action whose outcome the current head predicts worst.

    Numpy only (it runs in collector processes). ``model_path`` is reloaded whenever its
    file changes (checked with one ``stat`` per step); ``loads`` and ``model`` tell what
    was picked up. Until a model exists it draws exactly what
    ``agent.policies.RandomPolicy`` with the same seed would.
    """

    def __init__(
        self,
        action_space: spaces.Box,
        num_envs: int,
        model_path: str | Path,
        seed: int | None = None,
        candidates: int = 8,
        epsilon: float = EPSILON,
        ucb_beta: float = UCB_BETA,
        action_names: tuple[str, ...] = (),
    ) -> None:
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"action_space={action_space!r}: expected a 1-D Box (one env's action space)")
        if int(num_envs) < 1 or int(candidates) < 1:
            raise ValueError(f"num_envs={num_envs!r}, candidates={candidates!r}: expected both >= 1")
        if not 0.0 <= epsilon <= 1.0 or ucb_beta < 0.0:
            raise ValueError(f"epsilon={epsilon!r}, ucb_beta={ucb_beta!r}: expected epsilon in [0, 1], beta >= 0")
        self.low = np.asarray(action_space.low, dtype=np.float32)
        self.high = np.asarray(action_space.high, dtype=np.float32)
        self.num_envs, self.candidates = int(num_envs), int(candidates)
        self.epsilon, self.ucb_beta = float(epsilon), float(ucb_beta)
        self.model_path = Path(model_path)
        self.rng = np.random.default_rng(seed)
        if action_names and len(action_names) != self.low.shape[0]:
            raise ValueError(f"action_names={action_names!r}: expected {self.low.shape[0]} names, one per action dimension")
        # Two-valued dimensions (the image world's flip) act by threshold, as the env does.
        self.flip = np.array([name == "flip" for name in action_names] or [False] * self.low.shape[0])
        self.model: ErrorModel | None = None
        self.loads = 0
        self._signature: tuple[int, int, int] | None = None

    def reset(self, env_mask: np.ndarray) -> None:
        """Stateless per episode: nothing to restart."""

    def act(self, observations: np.ndarray, infos: dict) -> np.ndarray:
        self.refresh()
        shape = (self.num_envs, self.low.shape[0])
        if self.model is None:
            return self.rng.uniform(self.low, self.high, size=shape).astype(np.float32)
        candidates = self.rng.uniform(self.low, self.high, size=(self.num_envs, self.candidates, shape[1]))
        mean, std = self.model.predict(self.normalised(candidates))  # (N, K)
        best = np.argmax(mean + self.ucb_beta * std, axis=1)
        # Candidate 0 is a uniform draw: taking it is the epsilon exploration step.
        best = np.where(self.rng.random(self.num_envs) < self.epsilon, 0, best)
        return candidates[np.arange(self.num_envs), best].astype(np.float32)

    def normalised(self, actions: np.ndarray) -> np.ndarray:
        """Actions as the error model sees them: the normalised change they apply."""
        x = np.clip(actions, -1.0, 1.0)
        return np.where(self.flip, (x > FLIP_THRESHOLD).astype(np.float64), x)

    def refresh(self) -> bool:
        """Reload the model if its file changed; True when a new one was loaded."""
        try:
            stat = os.stat(self.model_path)
        except FileNotFoundError:
            return False
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return False
        model = load_error_model(self.model_path)
        if model.action_dim != self.low.shape[0]:
            raise ValueError(f"{self.model_path}: error model for {model.action_dim} action dimensions, "
                             f"the env has {self.low.shape[0]}")  # fmt: skip
        self.model, self._signature = model, signature
        self.loads += 1
        self._record_pickup()
        return True

    def _record_pickup(self) -> None:
        assert self.model is not None
        record = {"pid": os.getpid(), "loads": self.loads, "version": self.model.version,
                  "learner_step": self.model.learner_step, "time": time.time()}  # fmt: skip
        path = self.model_path.parent / PICKUP_DIR / f"{os.getpid()}.json"
        _write_atomically(path, lambda file: file.write(json.dumps(record).encode()))


@dataclass(frozen=True)
class CuriousPolicyFactory:
    """Picklable ``policy_factory`` (the signature of ``agent.policies.make_policy``) that
    builds a :class:`CuriousPolicy` reading ``model_path`` in each collector process."""

    model_path: str
    env_id: str
    epsilon: float = EPSILON
    ucb_beta: float = UCB_BETA

    def __call__(
        self, policy_cfg: Any, action_space: spaces.Box, num_envs: int, seed: int | None = None, action_set: str = "camera"
    ) -> CuriousPolicy:
        names = tuple(d.name for d in envs.world_module(self.env_id).action_dims(action_set))
        return CuriousPolicy(
            action_space, num_envs, self.model_path, seed, candidates=int(policy_cfg.curious_candidates),
            epsilon=self.epsilon, ucb_beta=self.ucb_beta, action_names=names,
        )  # fmt: skip


# ---------------------------------------------------------------- learner side


class CuriosityCallback:
    """``learner.train.StepCallback`` that fits and publishes the error model.

    Per-pair errors are the squared errors of the head's prediction against the
    normalised target, averaged over the continuous target columns, captured by forward
    hooks during the training step itself (before its update). When the hooks saw nothing
    (the first step, before they exist; or a ``torch.compile``d model that bypasses them)
    one no-grad eval-mode forward of the batch, without augmentation, replaces them. Only
    pairs one step apart are used: their relative change is the action that was taken.
    Only rank 0 fits and publishes; the other ranks' collectors read the same file.
    """

    def __init__(
        self, env_id: str, action_set: str, model_path: str | Path, refresh_steps: int, seed: int = 0,
        min_samples: float = MIN_SAMPLES,
    ) -> None:  # fmt: skip
        if refresh_steps < 1:
            raise ValueError(f"policy.curious_refresh_steps={refresh_steps!r}: expected an int >= 1")
        self.world = envs.world_module(env_id)
        self.action_set = action_set
        self.max_steps = self.world.action_max_steps(action_set)
        self.model_path = Path(model_path)
        self.refresh_steps, self.min_samples = int(refresh_steps), float(min_samples)
        # Forget with a half-life of one refresh period (at least 10 steps): a published
        # model describes roughly the head of the last period.
        half_life = max(self.refresh_steps, 10)
        self.fitter = ErrorModelFitter(len(self.max_steps), seed=seed, forgetting=0.5 ** (1.0 / half_life))
        self.version = self._last_version()
        self.publications = 0
        self.forward_fallbacks = 0
        self._captured: dict[str, Any] = {}
        self._hooked = False

    def _last_version(self) -> int:
        # A resumed run keeps numbering where the previous invocation stopped.
        try:
            return load_error_model(self.model_path).version
        except (FileNotFoundError, ValueError):
            return 0

    def on_step(self, step: int, learner: Learner, pairs: ViewPairs) -> None:
        if not learner.context.is_main:
            return
        if not self._hooked:
            self._attach(learner)
        predicted, target = self._captured.pop("predicted", None), self._captured.pop("target", None)
        if predicted is None or target is None or predicted.shape[0] != len(pairs):
            self.forward_fallbacks += 1
            predicted, target = self._forward(learner, pairs)
        errors = self._pair_errors(learner, predicted, target)
        one_step = np.asarray(pairs.offset) == 1
        if one_step.any():
            change = self.world.relative_change(pairs.state_a[one_step], pairs.state_b[one_step], self.action_set)
            self.fitter.update(np.clip(change / self.max_steps, -1.0, 1.0), errors[one_step])
        if step % self.refresh_steps == 0 and self.fitter.effective_samples >= self.min_samples:
            self.publish(step)

    def publish(self, step: int) -> ErrorModel:
        """Publish the current fit (and a small status JSON next to it)."""
        self.version += 1
        model = self.fitter.solve(self.version, step)
        publish_error_model(model, self.model_path)
        self.publications += 1
        status = {"version": model.version, "learner_step": step, "publications": self.publications,
                  "effective_samples": model.effective_samples, "mean_error": model.mean_error,
                  "noise_std": float(np.sqrt(model.noise_var)), "forward_fallbacks": self.forward_fallbacks}  # fmt: skip
        _write_atomically(self.model_path.with_name(STATUS_FILE), lambda file: file.write(json.dumps(status).encode()))
        log.debug("published error model v%d at step %d", model.version, step)
        return model

    def _attach(self, learner: Learner) -> None:
        model = learner.model
        if model.predictor is None or model.action_normalizer is None:
            raise ValueError(f"method={learner.cfg.method.name!r} has no prediction head: policy=curious needs one")

        def keep(name: str):
            def hook(module: Any, inputs: Any, output: Any) -> None:
                self._captured[name] = output.detach()

            return hook

        model.predictor.register_forward_hook(keep("predicted"))
        model.action_normalizer.register_forward_hook(keep("target"))
        self._hooked = True

    def _forward(self, learner: Learner, pairs: ViewPairs) -> tuple[Any, Any]:
        import torch

        from learner.augment import normalize_images, to_float_images
        from learner.normalization import IMAGE_MEAN, IMAGE_STD

        model, n = learner.model, len(pairs)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                views = torch.from_numpy(np.concatenate([pairs.view_a, pairs.view_b])).to(learner.device)
                # No augmentation: it would advance the learner's augmentation generator and
                # change the batches of a resumed run.
                images = normalize_images(to_float_images(views, channels_last=learner.channels_last), IMAGE_MEAN, IMAGE_STD)
                out = model(images[:n], images[n:])
                target = model.action_normalizer(torch.from_numpy(pairs.relative_action).to(learner.device))
        finally:
            model.train(was_training)
        self._captured.clear()  # the hooks saw this forward too
        return out["action_pred"], target

    @staticmethod
    def _pair_errors(learner: Learner, predicted: Any, target: Any) -> np.ndarray:
        squared = (predicted.float() - target.float()) ** 2  # (N, A)
        discrete = learner.model.discrete_columns
        if discrete is not None and bool(discrete.any()):
            squared = squared[:, ~discrete]  # two-valued columns are logits, not regressions
        return squared.mean(dim=1).cpu().numpy().astype(np.float64)


# ---------------------------------------------------------------- wiring


def _check_curious_config(cfg: Any) -> None:
    from learner.model import method_spec  # torch: only in the learner process

    method = str(cfg.method.name)
    if not method_spec(method).needs_predictor:
        raise ValueError(
            f"method={method!r} has no prediction head: policy=curious scores actions by the "
            "prediction head's error; use method=ciper or method=predict, or another policy"
        )
    if str(cfg.train.mode) != "online":
        raise ValueError(f"train.mode={cfg.train.mode!r}: policy=curious steers live collectors; expected online")


def model_path_of(run_dir: str | Path) -> Path:
    """Where a run publishes its error model."""
    return Path(run_dir) / "curious" / MODEL_FILE


def curious_policy_factory(cfg: Any, run_dir: str | Path) -> CuriousPolicyFactory:
    """The picklable collector-side factory for ``cfg`` (a ``policy_factory`` for ``train``).

    It only acts curiously if :class:`CuriosityCallback` publishes models: use
    :func:`curious_training` to get both. Raises ValueError for methods without a
    prediction head (simclr, simclr_tt) and for offline training.
    """
    _check_curious_config(cfg)
    return CuriousPolicyFactory(str(model_path_of(run_dir)), str(cfg.env.id))


def curious_training(cfg: Any, run_dir: str | Path) -> tuple[CuriousPolicyFactory, CuriosityCallback]:
    """``(policy_factory, callback)`` for ``train(cfg, run_dir, policy_factory=..., callbacks=[callback])``."""
    factory = curious_policy_factory(cfg, run_dir)
    callback = CuriosityCallback(
        str(cfg.env.id), str(cfg.env.action_set), factory.model_path,
        refresh_steps=int(cfg.policy.curious_refresh_steps), seed=int(cfg.train.seed),
    )  # fmt: skip
    return factory, callback
