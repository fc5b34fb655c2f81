"""``policy=curious``, collector side: the error model and the policy that follows it.

Numpy only: this module runs in collector processes. An :class:`ErrorModel` predicts, for a
normalised action, the squared error the learner's prediction head makes on the pair that
action produces: ridge regression on random Fourier features (:class:`ErrorModelFitter`,
with exponential forgetting so it follows the current head rather than its history). The
learner (``learner.training.curiosity``) fits it and publishes it atomically as a plain ``.npz``
(:func:`publish_error_model`; :func:`load_error_model` never unpickles). The
:class:`CuriousPolicy` reloads that file when it changes, draws
``policy.curious_candidates`` uniform candidate actions per env and takes the one with the
highest predicted error plus an upper-confidence bonus; with probability ``epsilon`` it
takes a uniform action instead, so regions the model is wrong about keep being visited.
Before the first publication it is exactly :class:`agent.policies.RandomPolicy`. Scoring K
candidates costs K feature evaluations, not K renders. Every load is recorded in
``<run>/curious/pickups/<pid>.json``, so a run shows which model versions its collectors used.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from threadpoolctl import ThreadpoolController

import envs
from agent.atomic_files import write_bytes_atomic
from conf.schema import PolicyConfig
from envs.scene_state import DEFAULT_ACTION_SET

FORMAT_VERSION = 1
MODEL_FILE = "error_model.npz"
STATUS_FILE = "status.json"
PICKUP_DIR = "pickups"
# Error-model and policy constants. They are not config keys (conf/schema.py only has
# curious_candidates and curious_refresh_steps); each is a constructor argument.
# The error model's and the policy's settings have their one default in the config
# (conf.schema.PolicyConfig.curious_*; --help); these names are those defaults.
NUM_FEATURES = PolicyConfig.curious_features  # random Fourier features of the normalised action
LENGTHSCALE = PolicyConfig.curious_lengthscale  # in normalised action units: the box [-1, 1] spans ~4 lengthscales
RIDGE = PolicyConfig.curious_ridge  # prior precision; one sample adds ~2 to the feature Gram diagonal sum
EPSILON = PolicyConfig.curious_epsilon  # share of uniform actions among the curious ones (coverage)
UCB_BETA = PolicyConfig.curious_ucb_beta  # weight of the predictive standard deviation in a candidate's score
MIN_SAMPLES = 32.0  # effective samples before the first publication
FLIP_THRESHOLD = 0.5  # envs.image_state: a normalised flip action above this toggles
# The error model's matrices are small (N x 129); a multi-threaded BLAS spinning against a
# learner and collectors that already hold every core made one update 40-70 ms instead of
# 0.3 ms (measured on 2 busy cores: curious runs trained at 866 images/s against 1,520 for
# the other policies). Its math runs on one BLAS thread (``_one_blas_thread``).
_THREADPOOLS: ThreadpoolController | None = None


def _one_blas_thread():
    """A context in which numpy's BLAS uses one thread (the controller is built once: ~1 ms)."""
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


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
        with _one_blas_thread():
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
        self.ridge, self.forgetting, self.lengthscale = float(ridge), float(forgetting), float(lengthscale)
        size = num_features + 1
        self.gram = np.zeros((size, size))  # sum w phi phi^T
        self.moment = np.zeros(size)  # sum w phi e
        self.sum_sq = 0.0  # sum w e^2
        self.sum_error = 0.0  # sum w e
        self.effective_samples = 0.0  # sum w

    @property
    def action_dim(self) -> int:
        return int(self.weights.shape[1])

    @property
    def num_features(self) -> int:
        return int(self.weights.shape[0])

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
        f = self.forgetting
        with _one_blas_thread():
            phi = rff_features(x, self.weights, self.phase)
            self.gram = f * self.gram + phi.T @ phi
            self.moment = f * self.moment + phi.T @ error
        self.sum_sq = f * self.sum_sq + float(error @ error)
        self.sum_error = f * self.sum_error + float(error.sum())
        self.effective_samples = f * self.effective_samples + float(error.size)

    def solve(self, version: int, learner_step: int) -> ErrorModel:
        """The current ridge solution as a publishable :class:`ErrorModel`."""
        precision = self.gram + self.ridge * np.eye(self.gram.shape[0])
        with _one_blas_thread():
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



def publish_error_model(model: ErrorModel, path: str | Path) -> None:
    """Write ``model`` to ``path`` (.npz) atomically, refusing anything that needs pickle."""
    arrays = model.arrays()
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"{name}: dtype {array.dtype} would need pickle; expected a numeric array")
    write_bytes_atomic(Path(path), lambda file: np.savez(file, **arrays))


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


def model_path_of(run_dir: str | Path) -> Path:
    """Where a run publishes its error model."""
    return Path(run_dir) / "curious" / MODEL_FILE


# ---------------------------------------------------------------- the policy


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
        write_bytes_atomic(path, lambda file: file.write(json.dumps(record).encode()))


@dataclass(frozen=True)
class CuriousPolicyFactory:
    """Picklable ``policy_factory`` (the signature of ``agent.policies.make_policy``) that
    builds a :class:`CuriousPolicy` reading ``model_path`` in each collector process."""

    model_path: str
    env_id: str

    def __call__(
        self, policy_cfg: Any, action_space: spaces.Box, num_envs: int, seed: int | None = None, action_set: str = DEFAULT_ACTION_SET
    ) -> CuriousPolicy:
        names = tuple(d.name for d in envs.world_module(self.env_id).action_dims(action_set))
        return CuriousPolicy(
            action_space, num_envs, self.model_path, seed, candidates=int(policy_cfg.curious_candidates),
            epsilon=policy_cfg.curious_epsilon, ucb_beta=policy_cfg.curious_ucb_beta, action_names=names,
        )  # fmt: skip
