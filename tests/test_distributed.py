"""Multi-process learner: NT-Xent over ranks equals one process, and torchrun trains (gloo, CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from learner.methods.losses import nt_xent
from learner.training.distributed import gather_with_grad

WORLD, N, D, TEMPERATURE = 2, 4, 8, 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * N, D, generator=generator), torch.randn(WORLD * N, D, generator=generator)


def rank_worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    z_a, z_b = global_batch()
    local_a = z_a[rank * N:(rank + 1) * N].clone().requires_grad_(True)
    local_b = z_b[rank * N:(rank + 1) * N].clone().requires_grad_(True)
    loss = nt_xent(local_a, local_b, TEMPERATURE, gather=gather_with_grad, offset=rank * N)
    loss.backward()
    results[rank] = (loss.item(), local_a.grad.clone(), local_b.grad.clone())
    dist.destroy_process_group()


def test_two_rank_nt_xent_equals_one_rank_on_the_same_global_batch():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(rank_worker, args=(free_port(), results), nprocs=WORLD, join=True)
    z_a, z_b = global_batch()
    z_a.requires_grad_(True)
    z_b.requires_grad_(True)
    reference = nt_xent(z_a, z_b, TEMPERATURE)
    reference.backward()
    mean_loss = sum(results[r][0] for r in range(WORLD)) / WORLD
    assert mean_loss == pytest.approx(reference.item(), rel=1e-5)
    # DDP averages gradients over ranks: grad of the mean of the ranks' losses.
    for rank in range(WORLD):
        rows = slice(rank * N, (rank + 1) * N)
        torch.testing.assert_close(results[rank][1] / WORLD, z_a.grad[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(results[rank][2] / WORLD, z_b.grad[rows], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_train_and_write_one_checkpoint(tiny_dataset, tmp_path):
    run_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "learner.train_app", "train.mode=offline", f"train.dataset={tiny_dataset}",
        "env.image_size=32", "model.width=8", "model.proj_hidden=64", "model.pred_hidden=64",
        "train.steps=6", "train.batch_size=8", "train.evaluate=false", "train.checkpoint_every=3",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 6 and metrics["completed"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["last.pt"]
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert payload["world_size"] == 2 and len(payload["pair_source_ranks"]) == 2
