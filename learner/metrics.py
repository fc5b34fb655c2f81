"""Downstream metrics on frozen encoder features: invariance, equivariance and hierarchy.

Every function here is pure: it takes features (N, D) as numpy arrays or torch tensors
plus labels or pose targets, and returns a plain float. Invariance is scored with a
linear probe and a weighted kNN on object category (top-1 accuracy); equivariance with
an MLP (or linear) regressor of absolute pose or, following the 3DIEBench / SIE protocol,
of the relative action between two views from their concatenated features (R^2); the
hierarchy the CIPER paper describes (views cluster by object, ordered by pose inside
the cluster) with silhouette, kNN purity and the within-object rank correlation between
feature distance and pose distance. Probes standardise their inputs with statistics of
the training split only, are deterministic for a given ``seed``, and run on ``device``.
Nothing here reads a config or knows about the environment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ArrayLike = np.ndarray | torch.Tensor
Device = str | torch.device
Metric = Literal["cosine", "euclidean"]

# Rows of a pairwise-distance block computed at once: 1024 x 5000 float64 is ~40 MB.
_CHUNK_ROWS = 1024


# ---------------------------------------------------------------- input handling


def _to_numpy(values: ArrayLike | Sequence, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _features(
    x: ArrayLike, name: str, device: Device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A finite (N, D) float tensor on ``device``, or a ValueError naming ``name``."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to(device=device, dtype=dtype)
    else:
        t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    if t.ndim != 2:
        raise ValueError(f"{name}.shape={tuple(t.shape)}: expected 2-D features (N, D)")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}.shape={tuple(t.shape)}: expected at least one row and column")
    n_bad = int((~torch.isfinite(t)).sum())
    if n_bad:
        raise ValueError(f"{name} has {n_bad} non-finite values: features must be finite")
    return t


def _targets(y: ArrayLike, name: str, n_rows: int) -> np.ndarray:
    """Regression targets as float64 (N, T); a 1-D target becomes one column."""
    arr = _to_numpy(y, name).astype(np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}.shape={arr.shape}: expected targets of shape (N,) or (N, T)")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows: expected {n_rows} (one per feature row)")
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{name} has {int((~np.isfinite(arr)).sum())} non-finite values: targets must be finite"
        )
    return arr


def _labels(y: ArrayLike | Sequence, name: str, n_rows: int) -> np.ndarray:
    arr = _to_numpy(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}.shape={arr.shape}: expected 1-D labels (N,)")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"{name} has {arr.shape[0]} labels: expected {n_rows} (one per feature row)"
        )
    return arr


def _encode_train_test_labels(
    train_y: np.ndarray, test_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Map labels to 0..K-1 using the train classes; unseen test labels become -1.

    A test label never seen in training can never be predicted, so -1 scores it wrong
    instead of failing the whole evaluation.
    """
    classes, train_codes = np.unique(train_y, return_inverse=True)
    pos = np.searchsorted(classes, test_y).clip(0, len(classes) - 1)
    test_codes = np.where(classes[pos] == test_y, pos, -1)
    return train_codes.astype(np.int64), test_codes.astype(np.int64), len(classes)


def _check_same_width(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_b} has {b.shape[1]} columns but {name_a} has {a.shape[1]}: "
            "train and test features must have the same width"
        )


def standardise(
    train: ArrayLike, test: ArrayLike, eps: float = 1e-8, device: Device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score both splits with the mean and std of ``train`` only (float32 tensors).

    Using test statistics would leak the test distribution into the probe. Columns that
    are constant on train keep their centred value (std treated as 1) so they stay finite.
    """
    train_t = _features(train, "train", device)
    test_t = _features(test, "test", device)
    _check_same_width(train_t, test_t, "train", "test")
    mean = train_t.mean(dim=0, keepdim=True)
    std = train_t.std(dim=0, unbiased=False, keepdim=True)
    std = torch.where(std > eps, std, torch.ones_like(std))
    return (train_t - mean) / std, (test_t - mean) / std


# ---------------------------------------------------------------- invariance


def linear_probe_top1(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: Device = "cpu",
) -> float:
    """Top-1 test accuracy of a multinomial logistic regression on standardised features.

    Trained full-batch with L-BFGS (strong-Wolfe line search); ``epochs`` is the number
    of L-BFGS iterations, each one or more full passes over the training set.
    ``weight_decay`` is the coefficient of 0.5 * ||W||^2 added to the mean cross-entropy
    (the bias is not decayed). The problem is convex, so ``seed`` only sets the small
    random initialisation. Test labels absent from training count as errors.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: expected at least 1 L-BFGS iteration")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay}: expected >= 0")
    xtr, xte = standardise(train_x, test_x, device=device)
    ytr_np, yte_np, n_classes = _encode_train_test_labels(
        _labels(train_y, "train_y", xtr.shape[0]), _labels(test_y, "test_y", xte.shape[0])
    )
    if n_classes < 2:
        raise ValueError(f"train_y has {n_classes} class: a probe needs at least 2 classes")
    ytr = torch.as_tensor(ytr_np, device=device)
    yte = torch.as_tensor(yte_np, device=device)

    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(xtr.shape[1], n_classes, generator=generator)).to(device)
    weight.requires_grad_(True)
    bias = torch.zeros(n_classes, device=device, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias],
        lr=lr,
        max_iter=epochs,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(xtr @ weight + bias, ytr) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    # One LBFGS.step runs up to max_iter iterations.
    optimiser.step(closure)
    with torch.no_grad():
        predicted = (xte @ weight + bias).argmax(dim=1)
    return float((predicted == yte).double().mean())


def knn_top1(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    k: int = 20,
    temperature: float = 0.07,
    vote: Literal["weighted", "majority"] = "weighted",
    device: Device = "cpu",
) -> float:
    """Top-1 test accuracy of a cosine-similarity kNN classifier.

    ``vote="weighted"`` is the InstDisc / solo-learn vote: each of the k most similar
    training points adds exp(similarity / temperature) to its class. ``"majority"``
    gives each neighbour one vote; ties go to the lowest class code. Features are only
    L2-normalised (not standardised), as in those reference implementations.
    """
    if vote not in ("weighted", "majority"):
        raise ValueError(f"vote={vote!r}: expected 'weighted' or 'majority'")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: expected > 0")
    xtr = F.normalize(_features(train_x, "train_x", device), dim=1)
    xte = F.normalize(_features(test_x, "test_x", device), dim=1)
    _check_same_width(xtr, xte, "train_x", "test_x")
    if not 1 <= k <= xtr.shape[0]:
        raise ValueError(f"k={k}: expected 1 <= k <= number of training points ({xtr.shape[0]})")
    ytr_np, yte_np, n_classes = _encode_train_test_labels(
        _labels(train_y, "train_y", xtr.shape[0]), _labels(test_y, "test_y", xte.shape[0])
    )
    ytr = torch.as_tensor(ytr_np, device=device)
    yte = torch.as_tensor(yte_np, device=device)

    n_correct = 0
    for start in range(0, xte.shape[0], _CHUNK_ROWS):
        similarity = xte[start : start + _CHUNK_ROWS] @ xtr.T  # (c, N_train)
        top_sim, top_idx = similarity.topk(k, dim=1)  # (c, k)
        if vote == "weighted":
            votes = (top_sim / temperature).exp()
        else:
            votes = torch.ones_like(top_sim)
        scores = torch.zeros(top_sim.shape[0], n_classes, device=device, dtype=votes.dtype)
        scores.scatter_add_(1, ytr[top_idx], votes)  # (c, K)
        n_correct += int((scores.argmax(dim=1) == yte[start : start + _CHUNK_ROWS]).sum())
    return n_correct / xte.shape[0]


# ---------------------------------------------------------------- equivariance


def r2_score(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Coefficient of determination, averaged uniformly over output columns.

    Same as ``sklearn.metrics.r2_score(..., multioutput="uniform_average")`` with its
    default ``force_finite=True``: per column R^2 = 1 - SS_res / SS_tot; a column that is
    constant in ``y_true`` (SS_tot = 0) scores 1.0 if predicted exactly and 0.0
    otherwise, instead of nan / -inf. A 1-D input is one column. Needs >= 2 samples.
    """
    true = _to_numpy(y_true, "y_true").astype(np.float64)
    pred = _to_numpy(y_pred, "y_pred").astype(np.float64)
    if true.shape != pred.shape:
        raise ValueError(f"y_pred.shape={pred.shape} differs from y_true.shape={true.shape}")
    if true.ndim == 1:
        true, pred = true[:, None], pred[:, None]
    if true.ndim != 2:
        raise ValueError(f"y_true.shape={true.shape}: expected (N,) or (N, T)")
    if true.shape[0] < 2:
        raise ValueError(f"y_true has {true.shape[0]} samples: R^2 needs at least 2")
    if true.shape[1] == 0:
        raise ValueError(f"y_true.shape={true.shape}: expected at least one output column")
    ss_res = ((true - pred) ** 2).sum(axis=0)
    ss_tot = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    per_column = np.ones(true.shape[1])
    varying = ss_tot != 0
    per_column[varying] = 1.0 - ss_res[varying] / ss_tot[varying]
    per_column[~varying & (ss_res != 0)] = 0.0
    return float(per_column.mean())


def _mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def pose_regression_r2(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    hidden: Sequence[int] = (1024,),
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    device: Device = "cpu",
) -> float:
    """Test R^2 (``r2_score``) of an MLP regressing pose from frozen features.

    Inputs are standardised with train statistics and so are the targets (so every
    target column weighs the same in the MSE); predictions are mapped back before
    scoring. ``hidden=()`` is a linear regressor; otherwise Linear+ReLU layers of the
    given widths. Trained with Adam on shuffled minibatches for ``epochs`` passes.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: expected at least 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected at least 1")
    if any(int(size) < 1 for size in hidden):
        raise ValueError(f"hidden={tuple(hidden)}: every hidden width must be >= 1")
    xtr, xte = standardise(train_x, test_x, device=device)
    ytr_np = _targets(train_y, "train_y", xtr.shape[0])
    yte_np = _targets(test_y, "test_y", xte.shape[0])
    if ytr_np.shape[1] != yte_np.shape[1]:
        raise ValueError(f"test_y has {yte_np.shape[1]} columns but train_y has {ytr_np.shape[1]}")
    if xtr.shape[0] < 2:
        raise ValueError(f"train_x has {xtr.shape[0]} rows: regression needs at least 2")
    target_mean = ytr_np.mean(axis=0)
    target_std = ytr_np.std(axis=0)
    target_std[target_std == 0] = 1.0
    ytr = torch.as_tensor((ytr_np - target_mean) / target_std, dtype=torch.float32, device=device)

    # Seed a private RNG stream so the caller's global torch RNG is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _mlp(xtr.shape[1], [int(s) for s in hidden], ytr.shape[1]).to(device)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(xtr.shape[0], generator=generator).to(device)
        for start in range(0, xtr.shape[0], batch_size):
            batch = order[start : start + batch_size]
            loss = F.mse_loss(model(xtr[batch]), ytr[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        predicted = model(xte).double().cpu().numpy() * target_std + target_mean
    return r2_score(yte_np, predicted)


def ridge_regression_r2(
    train_x: ArrayLike,
    train_y: ArrayLike,
    test_x: ArrayLike,
    test_y: ArrayLike,
    train_groups: ArrayLike | None = None,
    alphas: Sequence[float] = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4),
    folds: int = 4,
) -> float:
    """R^2 on test of a linear ridge readout, its penalty chosen by cross-validation.

    Features and targets are standardised with train statistics; the penalty is the one
    with the best mean R^2 over ``folds`` folds of the training rows, split by
    ``train_groups`` when given (e.g. objects: the readout must generalise to unseen
    objects, as the test split asks). Closed form through one SVD per fold, so it is exact
    and fast. A linear readout measures how linearly decodable a quantity is and cannot
    memorise training objects the way an MLP on a few thousand views can.
    """
    xtr, xte = standardise(train_x, test_x)
    xtr, xte = xtr.double().numpy(), xte.double().numpy()
    ytr = _targets(train_y, "train_y", xtr.shape[0])
    yte = _targets(test_y, "test_y", xte.shape[0])
    mean, std = ytr.mean(axis=0), ytr.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"alphas={alphas}: expected positive penalties")
    groups = np.arange(xtr.shape[0]) if train_groups is None else _to_numpy(train_groups, "train_groups")
    unique = np.unique(groups)
    folds = int(min(folds, unique.size))
    if folds < 2:
        raise ValueError(f"{unique.size} training groups: cross-validation needs at least 2")
    fold_of_group = {g: i % folds for i, g in enumerate(np.random.default_rng(0).permutation(unique))}
    fold = np.array([fold_of_group[g] for g in groups])

    def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u, sv, vt = np.linalg.svd(x, full_matrices=False)
        return u, sv, vt, u.T @ ((y - mean) / std)

    def predict(parts, alpha: float, x: np.ndarray) -> np.ndarray:
        _, sv, vt, uty = parts
        weights = vt.T @ ((sv / (sv**2 + alpha))[:, None] * uty)
        return x @ weights * std + mean

    scores = np.zeros(len(alphas))
    for k in range(folds):
        inside = fold != k
        parts = fit(xtr[inside], ytr[inside])
        for a, alpha in enumerate(alphas):
            scores[a] += r2_score(ytr[~inside], predict(parts, alpha, xtr[~inside])) / folds
    best = float(alphas[int(np.argmax(scores))])
    return r2_score(yte, predict(fit(xtr, ytr), best, xte))


def relative_pose_r2(
    train_feat_a: ArrayLike,
    train_feat_b: ArrayLike,
    train_rel: ArrayLike,
    test_feat_a: ArrayLike,
    test_feat_b: ArrayLike,
    test_rel: ArrayLike,
    **kw,
) -> float:
    """3DIEBench / SIE equivariance score: R^2 of the relative action from two views.

    The regressor input is the concatenation [features(view a), features(view b)];
    ``kw`` is passed on to ``pose_regression_r2`` (hidden, epochs, seed, device, ...).
    """
    device = kw.get("device", "cpu")
    pairs = {}
    for split, a, b in (("train", train_feat_a, train_feat_b), ("test", test_feat_a, test_feat_b)):
        ta = _features(a, f"{split}_feat_a", device)
        tb = _features(b, f"{split}_feat_b", device)
        if ta.shape[0] != tb.shape[0]:
            raise ValueError(
                f"{split}_feat_b has {tb.shape[0]} rows but {split}_feat_a has {ta.shape[0]}: "
                "views a and b must be paired row by row"
            )
        pairs[split] = torch.cat([ta, tb], dim=1)
    return pose_regression_r2(pairs["train"], train_rel, pairs["test"], test_rel, **kw)


# ---------------------------------------------------------------- hierarchy


def _distances(a: torch.Tensor, b: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Pairwise distances (len(a), len(b)); cosine distance is 1 - cosine similarity."""
    if metric == "cosine":
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    if metric == "euclidean":
        return torch.cdist(a, b)
    raise ValueError(f"metric={metric!r}: expected 'cosine' or 'euclidean'")


def _self_distance_blocks(x: torch.Tensor, metric: Metric) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (row_start, distances of rows [start, start+c) to all rows) with an exact 0 diagonal.

    cdist's matmul path and the cosine formula leave ~1e-8 on the diagonal; zeroing it
    keeps a point's distance to itself out of the sums.
    """
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        block = _distances(x[start : start + _CHUNK_ROWS], x, metric)
        rows = torch.arange(block.shape[0], device=x.device)
        block[rows, rows + start] = 0.0
        yield start, block


def silhouette_score(
    x: ArrayLike, labels: ArrayLike, metric: Metric = "cosine", device: Device = "cpu"
) -> float:
    """Mean silhouette coefficient over all points (exact, float64, O(N^2) in row chunks).

    Same definition as ``sklearn.metrics.silhouette_score``: for point i, a = mean
    distance to the other members of its cluster, b = smallest mean distance to another
    cluster, s = (b - a) / max(a, b); members of single-point clusters score 0. Needs
    2 <= number of clusters <= N - 1.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric={metric!r}: expected 'cosine' or 'euclidean'")
    feats = _features(x, "x", device, torch.float64)
    n = feats.shape[0]
    _, codes_np = np.unique(_labels(labels, "labels", n), return_inverse=True)
    n_clusters = int(codes_np.max()) + 1
    if not 2 <= n_clusters <= n - 1:
        raise ValueError(
            f"labels has {n_clusters} distinct values for {n} points: silhouette needs "
            f"2 <= clusters <= N - 1"
        )
    codes = torch.as_tensor(codes_np.reshape(-1), device=device)
    one_hot = F.one_hot(codes, n_clusters).to(torch.float64)  # (N, K)
    counts = one_hot.sum(dim=0)  # (K,)
    scores = torch.empty(n, dtype=torch.float64, device=device)
    for start, block in _self_distance_blocks(feats, metric):
        own = codes[start : start + block.shape[0]]
        sums = block @ one_hot  # (c, K): summed distance to each cluster
        own_size = counts[own]
        a = sums.gather(1, own[:, None]).squeeze(1) / (own_size - 1).clamp(min=1)
        mean_other = sums / counts
        mean_other.scatter_(1, own[:, None], float("inf"))
        b = mean_other.min(dim=1).values
        denom = torch.maximum(a, b)
        s = torch.where(denom > 0, (b - a) / denom.clamp(min=1e-300), torch.zeros_like(a))
        scores[start : start + block.shape[0]] = torch.where(own_size > 1, s, torch.zeros_like(s))
    return float(scores.mean())


def knn_purity(
    x: ArrayLike,
    labels: ArrayLike,
    k: int = 10,
    metric: Metric = "euclidean",
    device: Device = "cpu",
) -> float:
    """Mean over points of the fraction of its k nearest neighbours (itself excluded)
    that share its label. 1.0 means every neighbourhood lies inside one label."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric={metric!r}: expected 'cosine' or 'euclidean'")
    feats = _features(x, "x", device)
    n = feats.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k={k}: expected 1 <= k <= N - 1 = {n - 1}")
    _, codes_np = np.unique(_labels(labels, "labels", n), return_inverse=True)
    codes = torch.as_tensor(codes_np.reshape(-1), device=device)
    same = 0.0
    for start, block in _self_distance_blocks(feats, metric):
        rows = torch.arange(block.shape[0], device=device)
        block[rows, rows + start] = float("inf")  # a point is not its own neighbour
        neighbours = block.topk(k, dim=1, largest=False).indices  # (c, k)
        own = codes[start : start + block.shape[0]]
        same += float((codes[neighbours] == own[:, None]).double().sum())
    return same / (n * k)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    return (last_rank - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks (ties share ranks).

    Returns nan when either input is constant (the correlation is undefined), as
    scipy.stats.spearmanr does.
    """
    a_np = _to_numpy(a, "a").astype(np.float64).reshape(-1)
    b_np = _to_numpy(b, "b").astype(np.float64).reshape(-1)
    if a_np.shape != b_np.shape:
        raise ValueError(f"b has {b_np.size} values but a has {a_np.size}: expected equal lengths")
    if a_np.size < 2:
        raise ValueError(f"a has {a_np.size} values: a correlation needs at least 2")
    if not (np.isfinite(a_np).all() and np.isfinite(b_np).all()):
        raise ValueError("a or b has non-finite values: ranks need finite inputs")
    ra = _average_ranks(a_np)
    rb = _average_ranks(b_np)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denom == 0:
        return float("nan")
    return float((ra * rb).sum() / denom)


def _pair_from_index(pair_index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, of the pair_index-th pair in row-major order of the strict upper
    triangle of an n x n matrix (the order np.triu_indices(n, 1) uses).

    Lets us sample pairs without materialising all n(n-1)/2 of them.
    """
    k = pair_index.astype(np.int64)
    n_pairs = n * (n - 1) // 2
    i = n - 2 - np.floor(np.sqrt(-8.0 * k + 4.0 * n * (n - 1) - 7) / 2.0 - 0.5).astype(np.int64)
    j = k + i + 1 - n_pairs + (n - i) * (n - i - 1) // 2
    return i, j


def within_group_pose_correlation(
    x: ArrayLike,
    pose: ArrayLike,
    groups: ArrayLike,
    max_pairs_per_group: int = 2000,
    seed: int = 0,
    metric: Metric = "euclidean",
) -> float:
    """Is a group's (object's) cluster ordered by pose? Mean over groups of the Spearman
    correlation between feature distance and pose distance over pairs of its points.

    Pose distance is the Euclidean distance between the given pose-encoding vectors
    (e.g. sin/cos of each angle, so angles wrap correctly); feature distance uses
    ``metric``. Groups with fewer than 3 points are skipped, and so are groups whose
    pairs all have the same pose (or feature) distance, where the correlation is
    undefined. A group with more than ``max_pairs_per_group`` pairs uses that many
    pairs drawn without replacement (seeded by ``seed``).
    """
    if max_pairs_per_group < 2:
        raise ValueError(f"max_pairs_per_group={max_pairs_per_group}: expected >= 2")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric={metric!r}: expected 'cosine' or 'euclidean'")
    feats = _features(x, "x", "cpu", torch.float64)
    n = feats.shape[0]
    pose_np = _targets(pose, "pose", n)
    group_np = _labels(groups, "groups", n)
    rng = np.random.default_rng(seed)
    correlations = []
    for group in np.unique(group_np):
        members = np.flatnonzero(group_np == group)
        m = members.size
        if m < 3:
            continue
        n_pairs = m * (m - 1) // 2
        if n_pairs <= max_pairs_per_group:
            i, j = np.triu_indices(m, 1)
        else:
            i, j = _pair_from_index(rng.choice(n_pairs, max_pairs_per_group, replace=False), m)
        i, j = members[i], members[j]
        feature_distance = _pairwise_rows(feats, i, j, metric)
        pose_distance = np.linalg.norm(pose_np[i] - pose_np[j], axis=1)
        rho = spearman(feature_distance, pose_distance)
        if not np.isnan(rho):
            correlations.append(rho)
    if not correlations:
        raise ValueError(
            "groups has no group with >= 3 points and varying distances: "
            "within-group correlation is undefined"
        )
    return float(np.mean(correlations))


def _pairwise_rows(feats: torch.Tensor, i: np.ndarray, j: np.ndarray, metric: Metric) -> np.ndarray:
    a = feats[torch.as_tensor(i)]
    b = feats[torch.as_tensor(j)]
    if metric == "cosine":
        return (1.0 - F.cosine_similarity(a, b, dim=1)).numpy()
    if metric == "euclidean":
        return (a - b).norm(dim=1).numpy()
    raise ValueError(f"metric={metric!r}: expected 'cosine' or 'euclidean'")


# ---------------------------------------------------------------- visualisation


def pca_2d(x: ArrayLike) -> np.ndarray:
    """Project centred features onto their top-2 principal axes: float64 (N, 2).

    Signs are fixed (the largest-magnitude loading of each axis is positive, as
    sklearn's svd_flip does) so the same features always give the same picture.
    """
    feats = _features(x, "x", "cpu", torch.float64)
    if feats.shape[0] < 2 or feats.shape[1] < 2:
        raise ValueError(f"x.shape={tuple(feats.shape)}: PCA to 2-D needs N >= 2 and D >= 2")
    centred = feats - feats.mean(dim=0, keepdim=True)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2]  # (2, D)
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True))).squeeze(1)
    signs[signs == 0] = 1.0
    return (u[:, :2] * s[:2] * signs).numpy()
