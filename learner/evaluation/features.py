"""Frozen features of views: the encoder in eval mode, views in as the training loop sees them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from learner.data.images import model_input


def extract_features(
    model: nn.Module,
    views_uint8: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Frozen features (float32 (N, D) numpy) of uint8 views (N, H, W, 3).

    ``model`` is a :class:`learner.nets.pair_model.PairModel` (its ``encode`` is used) or a
    bare encoder. Images become encoder input exactly as in training
    (``learner.data.images.model_input``). Runs in eval mode (BatchNorm uses its running
    statistics) under ``torch.inference_mode`` on ``device`` (default: where the model's
    parameters are); the model's train/eval mode is restored afterwards.
    """
    views = np.asarray(views_uint8)
    if views.ndim != 4 or views.shape[-1] != 3 or views.dtype != np.uint8:
        raise ValueError(f"views of shape {views.shape} and dtype {views.dtype}: expected uint8 (N, H, W, 3)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if device is None:
        device = next(model.parameters()).device
    encode = model.encode if hasattr(model, "encode") else model
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, views.shape[0], batch_size):
                # A copy: probe views are read-only arrays, which torch cannot wrap.
                batch = torch.from_numpy(np.array(views[start : start + batch_size])).to(device)
                chunks.append(encode(model_input(batch)).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("views has 0 rows: expected at least one view")
    return np.concatenate(chunks)
