"""Downstream metrics on frozen features, built on scikit-learn and SciPy.

Every function here is pure: features (N, D) as numpy arrays (or torch tensors) plus labels
or targets in, plain numbers out; nothing reads a config or knows about the environment.
Invariance: a logistic-regression probe and a similarity-weighted kNN on labels (top-1).
Equivariance: per-column R^2 of a pose readout, either a linear ridge with its penalty
cross-validated over groups (objects) or an MLP stopped early on held-out groups, so
that both are trained to convergence without touching the test split. Hierarchy:
silhouette, kNN purity and the Spearman correlation between feature and pose distances
inside groups (episodes). Shortcut: positive retrieval by a colour histogram, the score a
contrastive loss gets for free when the two views of a pair share their colours.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.metrics import silhouette_score as _silhouette
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.preprocessing import StandardScaler
from torch import nn

ArrayLike = np.ndarray | torch.Tensor

RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


def as_features(x: ArrayLike | Sequence, name: str) -> np.ndarray:
    """A finite float64 (N, D) array with N, D >= 1, or a ValueError naming ``name``."""
    arr = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{name}.shape={arr.shape}: expected a non-empty 2-D array (N, D)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has {int((~np.isfinite(arr)).sum())} non-finite values: expected finite")
    return arr


def _same_rows(**arrays: np.ndarray) -> None:
    rows = {name: len(a) for name, a in arrays.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"row counts {rows}: expected one row per sample in each")


def _standardised(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score with the statistics of ``train`` only (test statistics would leak)."""
    scaler = StandardScaler().fit(train)
    return [scaler.transform(a) for a in (train, *others)]


# ---------------------------------------------------------------- invariance


def linear_probe_top1(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, C: float = 1.0) -> float:
    """Top-1 test accuracy of a multinomial logistic regression (L-BFGS to convergence) on
    standardised features. Test labels never seen in training count as errors."""
    xtr, xte = as_features(train_x, "train_x"), as_features(test_x, "test_x")
    ytr, yte = np.asarray(train_y), np.asarray(test_y)
    _same_rows(train_x=xtr, train_y=ytr)
    _same_rows(test_x=xte, test_y=yte)
    if np.unique(ytr).size < 2:
        raise ValueError(f"train_y has {np.unique(ytr).size} class: a probe needs at least 2")
    xtr, xte = _standardised(xtr, xte)
    probe = LogisticRegression(C=C, max_iter=2000).fit(xtr, ytr)
    return float((probe.predict(xte) == yte).mean())


def knn_top1(
    train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, k: int = 20, temperature: float = 0.07
) -> float:
    """Top-1 test accuracy of the InstDisc / solo-learn kNN: each of the k most cosine-similar
    training points votes exp(similarity / temperature) for its class."""
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: expected > 0")
    xtr, xte = as_features(train_x, "train_x"), as_features(test_x, "test_x")
    ytr, yte = np.asarray(train_y), np.asarray(test_y)
    _same_rows(train_x=xtr, train_y=ytr)
    if not 1 <= k <= len(xtr):
        raise ValueError(f"k={k}: expected 1 <= k <= number of training points ({len(xtr)})")
    knn = KNeighborsClassifier(k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1.0 - d) / temperature))
    return float((knn.fit(xtr, ytr).predict(xte) == yte).mean())


# ---------------------------------------------------------------- equivariance


def r2_per_column(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """R^2 of each target column (scikit-learn's; a constant true column scores 1 if
    predicted exactly, else 0)."""
    true, pred = as_features(y_true, "y_true"), as_features(y_pred, "y_pred")
    if true.shape != pred.shape or len(true) < 2:
        raise ValueError(f"y_true.shape={true.shape}, y_pred.shape={pred.shape}: expected equal shapes, N >= 2")
    return np.atleast_1d(r2_score(true, pred, multioutput="raw_values"))


def _group_folds(groups: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise ValueError(f"{n_groups} training group: cross-validation over groups needs at least 2")
    return list(GroupKFold(n_splits=min(folds, n_groups)).split(groups, groups=groups))


def _regression_inputs(
    train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, train_groups: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked 2-D arrays for a pose readout, features standardised on train:
    ``(train_x, train_y, test_x, test_y, train_groups)``."""
    xtr, xte = as_features(train_x, "train_x"), as_features(test_x, "test_x")
    ytr, yte = as_features(train_y, "train_y"), as_features(test_y, "test_y")
    groups = np.asarray(train_groups)
    _same_rows(train_x=xtr, train_y=ytr, train_groups=groups)
    xtr, xte = _standardised(xtr, xte)
    return xtr, ytr, xte, yte, groups


def ridge_r2(
    train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, train_groups: ArrayLike, folds: int = 4
) -> np.ndarray:
    """Per-column test R^2 of a linear ridge readout, closed form, its penalty chosen from
    ``RIDGE_ALPHAS`` by cross-validation over ``train_groups`` (e.g. objects: the readout
    must carry over to unseen ones). Features and targets are standardised on train."""
    xtr, ytr, xte, yte, groups = _regression_inputs(train_x, train_y, test_x, test_y, train_groups)
    scaler = StandardScaler().fit(ytr)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, cv=_group_folds(groups, folds)).fit(xtr, scaler.transform(ytr))
    return r2_per_column(yte, scaler.inverse_transform(ridge.predict(xte).reshape(len(xte), -1)))


def mlp_r2(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    train_groups: ArrayLike,
    hidden: Sequence[int] = (256,),
    max_epochs: int = 200,
    patience: int = 10,
    batch_size: int = 512,
    seed: int = 0,
) -> np.ndarray:
    """Per-column test R^2 of an MLP regressor trained to convergence: Adam on standardised
    inputs and targets, stopped when the loss on a quarter of the training groups (held out
    of fitting) has not improved for ``patience`` epochs; the best epoch's weights are kept.
    The output layer starts at zero, so an uninformative input scores ~0, not below it."""
    xtr, ytr, xte, yte, groups = _regression_inputs(train_x, train_y, test_x, test_y, train_groups)
    y_scaler = StandardScaler().fit(ytr)
    unique = np.random.default_rng(seed).permutation(np.unique(groups))
    if unique.size < 2:
        raise ValueError(f"{unique.size} training group: early stopping needs at least 2")
    held = np.isin(groups, unique[: max(1, unique.size // 4)])
    tensors = [torch.as_tensor(a, dtype=torch.float32) for a in (xtr[~held], y_scaler.transform(ytr[~held]), xtr[held], y_scaler.transform(ytr[held]))]
    model = _fit_early_stopped(*tensors, hidden, max_epochs, patience, batch_size, seed)
    with torch.no_grad():
        predicted = model(torch.as_tensor(xte, dtype=torch.float32)).double().numpy()
    return r2_per_column(yte, y_scaler.inverse_transform(predicted))


def _fit_early_stopped(
    fit_x: torch.Tensor, fit_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
    hidden: Sequence[int], max_epochs: int, patience: int, batch_size: int, seed: int,
) -> nn.Module:  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
        torch.manual_seed(seed)
        widths = [fit_x.shape[1], *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(widths[-1], fit_y.shape[1]))
    nn.init.zeros_(model[-1].weight)
    nn.init.zeros_(model[-1].bias)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch_size = min(batch_size, max(16, -(-len(fit_x) // 8)))  # at least ~8 steps an epoch on small sets
    best, best_loss, since_best = copy.deepcopy(model.state_dict()), float("inf"), 0
    for _ in range(max_epochs):
        order = torch.randperm(len(fit_x), generator=generator)
        for start in range(0, len(fit_x), batch_size):
            rows = order[start : start + batch_size]
            loss = nn.functional.mse_loss(model(fit_x[rows]), fit_y[rows])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            val_loss = float(nn.functional.mse_loss(model(val_x), val_y))
        if val_loss < best_loss:
            best, best_loss, since_best = copy.deepcopy(model.state_dict()), val_loss, 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    model.load_state_dict(best)
    return model.eval()


# ---------------------------------------------------------------- hierarchy


def silhouette_score(x: ArrayLike, labels: ArrayLike, metric: str = "cosine") -> float:
    """Mean silhouette coefficient (scikit-learn's); needs 2 <= clusters <= N - 1."""
    feats, labels = as_features(x, "x"), np.asarray(labels)
    n_clusters = np.unique(labels).size
    if not 2 <= n_clusters <= len(feats) - 1:
        raise ValueError(f"labels has {n_clusters} distinct values for {len(feats)} points: expected 2 <= clusters <= N - 1")
    return float(_silhouette(feats, labels, metric=metric))


def knn_purity(x: ArrayLike, labels: ArrayLike, k: int = 10, metric: str = "cosine") -> float:
    """Mean over points of the fraction of their k nearest neighbours (themselves excluded)
    that share their label; 1.0 means every neighbourhood lies inside one label."""
    feats, labels = as_features(x, "x"), np.asarray(labels)
    if not 1 <= k <= len(feats) - 1:
        raise ValueError(f"k={k}: expected 1 <= k <= N - 1 = {len(feats) - 1}")
    _, neighbours = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(feats).kneighbors(feats)
    rows = np.arange(len(feats))[:, None]
    # Drop each point itself (not always column 0 when points coincide), keep k others.
    others = np.array([row[row != i][:k] for i, row in zip(rows[:, 0], neighbours, strict=True)])
    return float((labels[others] == labels[rows]).mean())


def within_group_pose_correlation(x: ArrayLike, pose: ArrayLike, groups: ArrayLike, metric: str = "cosine") -> float:
    """Are views ordered by pose inside a group? Mean over groups (episodes) of the Spearman
    correlation between the feature distances and the pose distances of all pairs of its
    views. Comparing views of one group only keeps what differs between groups (the episode's
    floor, light, object) out of the score. A group whose views all have the same features
    carries no order and scores 0; groups with < 3 views or one pose distance are skipped."""
    feats, pose_arr, groups = as_features(x, "x"), as_features(pose, "pose"), np.asarray(groups)
    _same_rows(x=feats, pose=pose_arr, groups=groups)
    scores = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if members.size < 3:
            continue
        i, j = np.triu_indices(members.size, 1)
        pose_distance = np.linalg.norm(pose_arr[members[i]] - pose_arr[members[j]], axis=1)
        if np.ptp(pose_distance) == 0:
            continue
        feature_distance = _paired_distance(feats[members[i]], feats[members[j]], metric)
        scores.append(0.0 if np.ptp(feature_distance) < 1e-12 else float(spearmanr(feature_distance, pose_distance)[0]))
    if not scores:
        raise ValueError("no group has >= 3 views of varying pose: the within-group correlation is undefined")
    return float(np.mean(scores))


def _paired_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    if metric == "euclidean":
        return np.linalg.norm(a - b, axis=1)
    if metric == "cosine":
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return 1.0 - (a * b).sum(1) / np.where(norms > 0, norms, 1.0)
    raise ValueError(f"metric={metric!r}: expected 'cosine' or 'euclidean'")


# ---------------------------------------------------------------- visualisation


def pca_2d(x: ArrayLike) -> np.ndarray:
    """Features projected on their top two principal axes (N, 2), signs fixed (sklearn)."""
    return pca_2d_explained(x)[0]


def pca_2d_explained(x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """`pca_2d` and the fraction of the variance each of the two axes explains (2,)."""
    from sklearn.decomposition import PCA

    feats = as_features(x, "x")
    if feats.shape[0] < 2 or feats.shape[1] < 2:
        raise ValueError(f"x.shape={feats.shape}: PCA to 2-D needs N >= 2 and D >= 2")
    pca = PCA(n_components=2, svd_solver="full")
    return pca.fit_transform(feats), pca.explained_variance_ratio_
