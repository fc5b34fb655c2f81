"""3DIEBench in and out: a folder in SIE's layout trains and evaluates, a rollout written in it
reads back with the same pairs and targets, and a broken file is one line naming it.

The miniature folders are built here in the exact layout of facebookresearch/SIE
(``<root>/<synset>/<object_id>/image_<k>.jpg`` beside ``latent_<k>.npy``, lists
``<split>_images.npy`` of ``/<synset>/<object_id>`` and ``<split>_labels.npy``); the
latents' convention is checked against scipy, which SIE's loader uses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.spatial.transform import Rotation

import envs
from agent.dataset import ViewPairDataset
from agent.iebench_dataset import BadBenchmarkFile, BenchmarkSplit, MissingBenchmarkFile
from agent.rollout_app import rollout
from agent.transitions import TransitionBatch
from conf.compose import compose_config
from conf.errors import UserError
from envs import iebench_layout, iebench_state, scene_state
from envs.quaternions import (
    euler_xyz_from_quat,
    quat_canonical,
    quat_conjugate,
    quat_multiply,
    random_quaternion,
)
from learner.data.pair_sources import make_pair_source

REPO = Path(__file__).resolve().parents[1]
SYNSETS = ("02691156", "02958343", "03001627")  # three ShapeNet synset ids (airplane, car, chair)
SIZE = 32
TINY = ("model.width=8", "model.proj_hidden=64", "model.proj_dim=32", "model.pred_hidden=64", "train.batch_size=8",
        "optim.warmup_steps=2", "train.device=cpu", "train.log_every=5")  # fmt: skip


def draw_view(label: int, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A BGR view (as cv2.imwrite takes it): a class-shaped blob turned by the latent's z angle."""
    image = np.full((64, 64, 3), 40 + int(200 * latent[3]), np.uint8)  # floor hue as grey level
    angle = np.degrees(latent[2])
    box = cv2.boxPoints(((32.0, 32.0), (36.0, 12.0 + 10 * label), angle)).astype(np.int32)
    cv2.fillPoly(image, [box], (int(255 * latent[6]), 120 + 40 * label, 200))
    cv2.circle(image, (int(32 + 14 * np.cos(latent[0])), int(32 + 14 * np.sin(latent[1]))), 4, (255, 255, 255), -1)
    return np.clip(image.astype(np.int64) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)


def make_benchmark(root: Path, objects: dict[str, int] | None = None, views: int = 5, seed: int = 0) -> Path:
    """A miniature 3DIEBench: ``objects[split]`` objects per synset, ``views`` views each."""
    objects = objects or {"train": 4, "val": 2}
    rng = np.random.default_rng(seed)
    for split, per_synset in objects.items():
        paths, labels = [], []
        for label, synset in enumerate(SYNSETS):
            for n in range(per_synset):
                folder = root / synset / f"{split}{n:02d}{rng.integers(1 << 30):08x}"
                folder.mkdir(parents=True)
                for k in range(views):
                    latent = iebench_state.random_state(rng)  # SIE's ranges, its seven values
                    cv2.imwrite(str(folder / f"image_{k}.jpg"), draw_view(label, latent, rng))
                    np.save(folder / f"latent_{k}.npy", latent)
                paths.append(f"/{synset}/{folder.name}")
                labels.append(label)
        np.save(root / f"{split}_images.npy", np.array(paths))
        np.save(root / f"{split}_labels.npy", np.array(labels))
    return root


def sie_target(latent_1: np.ndarray, latent_2: np.ndarray) -> np.ndarray:
    """facebookresearch/SIE src/dataset.py: ``rot_1.inv() * rot_2`` as a quaternion (scipy),
    here made canonical (w >= 0) as this project's target is."""
    rot_1 = Rotation.from_euler("xyz", latent_1[..., :3])
    rot_2 = Rotation.from_euler("xyz", latent_2[..., :3])
    return quat_canonical((rot_1.inv() * rot_2).as_quat())


def test_rotation_latents_follow_sies_scipy_convention():
    rng = np.random.default_rng(0)
    quaternions = np.stack([random_quaternion(rng) for _ in range(200)])
    angles = euler_xyz_from_quat(quaternions)
    np.testing.assert_allclose(quat_canonical(Rotation.from_euler("xyz", angles).as_quat()), quaternions, atol=1e-12)
    a, b = (np.stack([iebench_state.random_state(rng) for _ in range(200)]) for _ in range(2))
    target = iebench_state.relative_change(a, b, "all")
    np.testing.assert_allclose(target[:, :4], sie_target(a, b), atol=1e-12)
    np.testing.assert_array_equal(target[:, 4:], b[:, 3:] - a[:, 3:])  # SIE's Dataset3DIEBenchAll: latent_2[3:] - latent_1[3:]
    assert iebench_state.relative_action_names("rotation_color") == (*(f"rotation_dq_{c}" for c in "xyzw"), "floor_hue", "light_hue")
    assert isinstance(envs.world_module(envs.IEBENCH_ID), envs.World)


def test_pairs_are_two_views_of_one_object_with_sies_target(tmp_path):
    root = make_benchmark(tmp_path / "3die")
    split = BenchmarkSplit(root, "train", SIZE)
    assert len(split) == 12 and split.latent_length == 7 and iebench_state.category_names(str(root)) == SYNSETS
    pairs = split.sample_pairs(8, np.random.default_rng(0), 1, 1, "rotation")
    assert pairs.view_a.shape == (8, SIZE, SIZE, 3) and pairs.view_a.dtype == np.uint8
    assert len(set(pairs.object_index.tolist())) == 8  # distinct objects: no false negatives in a batch
    np.testing.assert_array_equal(pairs.category, split.labels[pairs.object_index])
    assert (pairs.offset == 1).all() and not np.array_equal(pairs.state_a, pairs.state_b)
    np.testing.assert_allclose(pairs.relative_action, sie_target(pairs.state_a, pairs.state_b), atol=1e-6)
    same = split.sample_pairs(4, np.random.default_rng(1), 0, 0, "rotation")  # SimCLR: one view twice
    np.testing.assert_array_equal(same.view_a, same.view_b)
    np.testing.assert_allclose(same.relative_action, np.tile([0.0, 0.0, 0.0, 1.0], (4, 1)), atol=1e-7)
    # The held-out split "test" reads SIE's val list; views as PIL reads them (RGB).
    probe = BenchmarkSplit(root, "test", SIZE).probe_views(views_per_object=3, seed=0)
    assert len(probe) == 6 * 3 and set(probe.episode.tolist()) == set(range(6))
    bgr = cv2.imread(str(root / iebench_layout.split_lists(root, "val")[0][0] / "image_0.jpg"))
    np.testing.assert_array_equal(iebench_layout.read_view(root / iebench_layout.split_lists(root, "val")[0][0] / "image_0.jpg", 64), bgr[..., ::-1])


def test_ciper_train_trains_20_steps_on_a_3diebench_folder_and_evaluates(tmp_path):
    root = make_benchmark(tmp_path / "3die")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "learner.train_app", *TINY, "train.mode=offline", f"train.dataset={root}",
               f"env.image_size={SIZE}", "train.steps=20", "eval.views_per_object=4", "eval.probe_epochs=20",
               "eval.plots=false", f"hydra.run.dir={run_dir}"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["env"]["id"] == "3DIEBench" and config["env"]["catalog"] == str(root) and config["env"]["action_set"] == "rotation"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["prediction_target"][:4] == [f"rotation_dq_{c}" for c in "xyzw"]
    assert metrics["data"]["objects_available"] == 12
    scores = metrics["eval"]
    assert 0.0 <= scores["category_top1_linear"] <= 1.0  # 3 synsets, scored on the val objects
    assert {f"relative_pose_r2/rotation_dq_{c}" for c in "xyzw"} <= set(scores)
    assert np.isfinite([scores[f"relative_pose_r2/rotation_dq_{c}"] for c in "xyzw"]).all()

    evaluated = subprocess.run(
        [sys.executable, "-m", "learner.eval_app", f"eval.checkpoint={run_dir / 'checkpoints' / 'last.pt'}", "env.id=3DIEBench",
         f"env.catalog={root}", "eval.views_per_object=4", "eval.probe_epochs=20", "eval.plots=false", "train.device=cpu",
         f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())["eval"]
    assert again["category_top1_linear"] == pytest.approx(scores["category_top1_linear"])


def test_a_rollout_written_as_3diebench_reads_back_with_the_same_pairs_and_targets(tmp_path):
    common = ("env.image_size=32", "env.episode_steps=4", "env.split=categorised", "env.action_set=observer",
              "dataset.steps=60", "dataset.shard_size=30", "collector.vectorization=sync", "collector.num_envs=2")  # fmt: skip
    shards_root, bench_root = tmp_path / "shards", tmp_path / "3die"
    rollout(compose_config([*common, f"dataset.path={shards_root}"], run_dir=tmp_path / "r1"))
    written = rollout(compose_config([*common, f"dataset.path={bench_root}", "dataset.format=3diebench"], run_dir=tmp_path / "r2"))
    assert written["views_per_object"] == 5 and written["objects"]["train"] > 0 and written["objects"]["val"] > 0

    # The source transitions, by (episode, step).
    fields = TransitionBatch.concatenate(list(ViewPairDataset(shards_root).iter_views())).as_dict()
    row_of = {(int(e), int(k)): i for i, (e, k) in enumerate(zip(fields["episode_id"], fields["step"], strict=True))}

    for split in ("train", "test"):  # test reads the val list the writer made
        bench = BenchmarkSplit(bench_root, split, 32)
        assert bench.latent_length == len(iebench_state.OBJECT_VIEW_LATENT_NAMES) and (bench.view_counts == 5).all()
        for row, folder in enumerate(bench.folders):
            shard, local = (int(part) for part in folder.name.rsplit("_", 2)[1:])
            source = [row_of[(shard << 40) + local, k] for k in range(5)]
            assert (fields["category"][source] == bench.labels[row]).all()
            assert folder.parent.name == iebench_state.category_names(str(bench_root))[bench.labels[row]]
            views = bench.views(np.full(5, row), np.arange(5)).astype(np.int16)
            assert np.abs(views - fields["view"][source]).mean() < 1.0  # JPEG quality 100, 4:4:4: about 0.5 grey levels
            latents = np.stack([np.load(folder / f"latent_{k}.npy") for k in range(5)])
            np.testing.assert_array_equal(latents, iebench_state.latents_from_object_view(fields["state"][source]))

        pairs = bench.sample_pairs(16, np.random.default_rng(3), 1, 1, "all")
        source_a = [row_of[_source_key(bench, row, state)] for row, state in zip(pairs.object_index, pairs.state_a, strict=True)]
        source_b = [row_of[_source_key(bench, row, state)] for row, state in zip(pairs.object_index, pairs.state_b, strict=True)]
        latents_a, latents_b = (iebench_state.latents_from_object_view(fields["state"][s]) for s in (source_a, source_b))
        np.testing.assert_array_equal(pairs.relative_action, iebench_state.relative_action(latents_a[:, :7], latents_b[:, :7], "all"))
        # ... which is the ObjectView orientations' own relative rotation q_a^-1 q_b, as SIE defines it.
        qa, qb = fields["state"][source_a][:, scene_state.QUAT], fields["state"][source_b][:, scene_state.QUAT]
        np.testing.assert_allclose(pairs.relative_action[:, :4], quat_canonical(quat_multiply(quat_conjugate(qa), qb)), atol=1e-6)

    # Read as SIE's Dataset3DIEBench reads (PIL, root / entry[1:], float32 angles, scipy): the same pixels, the same rotation.
    entries, labels = np.load(bench_root / "train_images.npy"), np.load(bench_root / "train_labels.npy")
    assert entries.dtype.kind == "U" and labels.dtype == np.int64 and entries[0].startswith("/")
    bench = BenchmarkSplit(bench_root, "train", 32)
    for row, entry in enumerate(entries[:4]):
        image = np.asarray(Image.open(bench_root / entry[1:] / "image_3.jpg").convert("RGB"))
        np.testing.assert_array_equal(image, bench.views(np.array([row]), np.array([3]))[0])
        angles_1, angles_2 = (np.load(bench_root / entry[1:] / f"latent_{k}.npy")[:3].astype(np.float32) for k in (1, 4))
        quaternion = (Rotation.from_euler("xyz", angles_1).inv() * Rotation.from_euler("xyz", angles_2)).as_quat()
        ours = iebench_state.relative_action(*bench.states(np.array([row, row]), np.array([1, 4])), "rotation")
        np.testing.assert_allclose(quat_canonical(quaternion), ours, atol=1e-5)  # SIE's sign may differ: q and -q

    again = rollout(compose_config([*common, f"dataset.path={bench_root}", "dataset.format=3diebench"], run_dir=tmp_path / "r3"))
    assert not again["written"] and again["objects"] == written["objects"]  # a finished folder is left alone


def _source_key(bench: BenchmarkSplit, row: int, state: np.ndarray) -> tuple[int, int]:
    """(episode id, step) of the transition written as the view of object ``row`` whose
    latents are ``state`` (a pair carries states, not view indices)."""
    count = int(bench.view_counts[row])
    k = int(np.flatnonzero((bench.states(np.full(count, row), np.arange(count)) == state).all(axis=1))[0])
    shard, local = (int(part) for part in bench.folders[row].name.rsplit("_", 2)[1:])
    return (shard << 40) + local, k


def test_a_missing_view_is_one_error_naming_the_file(tmp_path):
    root = make_benchmark(tmp_path / "3die")
    folder = root / iebench_layout.split_lists(root, "train")[0][2]
    (folder / "image_3.jpg").unlink()
    message = rf"{folder / 'image_3.jpg'}: missing view 3 \(latent_3.npy is there\)"
    with pytest.raises(MissingBenchmarkFile, match=f"^{message}"):
        BenchmarkSplit(root, "train", SIZE)
    assert issubclass(MissingBenchmarkFile, UserError) and issubclass(MissingBenchmarkFile, FileNotFoundError)
    # ciper-train finds it before it writes anything: one line, exit code 2, no run folder.
    command = [sys.executable, "-m", "learner.train_app", "train.mode=offline", f"train.dataset={root}",
               f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert re.fullmatch(f"ciper-train: error: {message}.*", refused.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "run").exists()


def test_a_corrupt_jpeg_is_one_error_naming_the_file_also_from_the_prefetch_thread(tmp_path, make_config):
    root = make_benchmark(tmp_path / "3die", objects={"train": 1, "val": 1}, views=2)
    folder = root / iebench_layout.split_lists(root, "train")[0][0]
    cut, garbled = folder / "image_0.jpg", folder / "image_1.jpg"
    cut.write_bytes(cut.read_bytes()[:200])  # a file cut short (an interrupted copy)
    garbled.write_bytes(b"\xff\xd8 not a jpeg \xff\xd9")
    with pytest.raises(BadBenchmarkFile, match=rf"^{cut}: corrupt JPEG \(no end-of-image marker\)$"):
        BenchmarkSplit(root, "train", SIZE).probe_views(views_per_object=2, seed=0)
    with pytest.raises(ValueError, match=rf"^{garbled}: corrupt JPEG \(OpenCV cannot decode it\)$"):
        iebench_layout.read_view(garbled, SIZE)
    # Training draws pairs in a background thread: the error still names the file.
    cfg = make_config(*TINY, "train.mode=offline", f"train.dataset={root}", "env.id=3DIEBench", f"env.catalog={root}",
                      f"env.image_size={SIZE}")  # fmt: skip
    source = make_pair_source(cfg, envs.world_module(cfg.env.id), seed=0)
    try:
        with pytest.raises(BadBenchmarkFile, match=rf"^{folder}/image_[01].jpg: corrupt JPEG \("):
            source.next_pairs()
    finally:
        source.close()


def test_a_latent_of_the_wrong_length_is_one_error_naming_the_file(tmp_path):
    root = make_benchmark(tmp_path / "3die")
    folder = root / iebench_layout.split_lists(root, "val")[0][1]
    np.save(folder / "latent_2.npy", np.zeros(5))
    with pytest.raises(BadBenchmarkFile, match=rf"^{folder / 'latent_2.npy'}: latent of length 5: expected 7 values"):
        BenchmarkSplit(root, "val", SIZE).probe_views(views_per_object=5, seed=0)
    first = root / iebench_layout.split_lists(root, "val")[0][0] / "latent_0.npy"
    np.save(first, np.zeros(3))
    with pytest.raises(BadBenchmarkFile, match=rf"^{first}: latent of length 3: expected at least 7 values"):
        BenchmarkSplit(root, "val", SIZE)
