"""Typed config schema with one default per key, registered in Hydra's ConfigStore.

Each dataclass field carries a one-line doc comment. Group options (``method=simclr``,
``policy=curious``, ``report=quick`` ...) are instances of the same dataclasses that change
only the fields that differ, so a default never lives in two places.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import envs
from envs import OBJECT_VIEW_ID, view_arguments


# The env keys' defaults are the env constructors' own (envs.view_arguments, and each world's
# DEFAULT_ACTION_SET), so they live in one place; envs imports nothing from conf.
@dataclass
class EnvConfig:
    id: str = OBJECT_VIEW_ID  # Gymnasium id: ciper/ObjectView-v0 or ciper/ImageView-v0
    action_set: str | None = None  # which action dimensions exist (see the env's docstring); default: env.id's own (ObjectView camera, ImageView geometric)
    image_size: int = view_arguments.IMAGE_SIZE  # side of the square observation, pixels
    split: str = view_arguments.SPLIT  # catalogue split the observer learns on (objects; images for ImageView)
    catalog: str | None = None  # catalogue CSV / image folder; None = the shipped default
    episode_steps: int = view_arguments.EPISODE_STEPS  # steps before an episode truncates and a new object is drawn
    renderer: str = view_arguments.RENDERER  # tiny (CPU, deterministic) or egl (GPU, falls back to tiny)
    nuisance: str = view_arguments.NUISANCE  # per_step: light colour, floor/object tint (ImageView: background) redrawn every step; per_episode: at reset
    extra: dict[str, Any] = field(default_factory=dict)  # further env kwargs, passed through

    def __post_init__(self) -> None:
        if self.action_set is None:  # built in Python without one: the env's own default
            self.action_set = default_action_set(self.id)


def default_action_set(env_id: str) -> str | None:
    """The action set env ``env_id`` takes when none is given (None for an unknown id, which
    `conf.validate` reports)."""
    try:
        return envs.world_module(env_id).DEFAULT_ACTION_SET
    except ValueError:
        return None


# In the composed tree the default follows the final env.id (an override included); the
# resolver is registered by `register_configs`, and every app resolves before it runs.
ACTION_SET_OF_ENV_ID = "${env_default_action_set:${env.id}}"


@dataclass
class PolicyConfig:
    name: str = "smooth"  # random | orbit | smooth | curious
    smooth_theta: float = 0.15  # Ornstein-Uhlenbeck mean reversion per step (smooth)
    smooth_sigma: float = 0.35  # Ornstein-Uhlenbeck noise scale per step (smooth)
    orbit_speed: float = 0.5  # normalised azimuth action per step (orbit)
    curious_candidates: int = 8  # candidate actions scored per step (curious)
    curious_refresh_steps: int = 50  # learner steps between publications of the error model to the collectors (curious)
    curious_epsilon: float = 0.1  # share of uniform actions among the curious ones, for coverage (curious)
    curious_ucb_beta: float = 1.0  # weight of the error model's predictive std in a candidate's score (curious)
    curious_features: int = 128  # random Fourier features of the normalised action in the error model (curious)
    curious_lengthscale: float = 0.5  # their lengthscale, in normalised action units: [-1, 1] spans ~4 (curious)
    curious_ridge: float = 1.0  # the error model's prior precision (ridge penalty) (curious)


@dataclass
class CollectorConfig:
    kind: str = "local"  # local (vector env in subprocesses) or ray (Ray actors)
    num_envs: int = 2  # environments per collector (vectorised)
    num_workers: int = 1  # collector processes (local) or actors (ray)
    vectorization: str = "async"  # async (AsyncVectorEnv, one process per env) or sync
    ray_address: str | None = None  # Ray cluster address; None starts a local Ray
    chunk_steps: int = 16  # vector steps per batch sent to the buffer
    lead_views: int | None = 1024  # pause while this many views ahead of train.replay_ratio (None: never)


@dataclass
class BufferConfig:
    capacity: int = 20000  # views held in the replay buffer (uint8)
    max_offset: int = 1  # the largest pair offset the buffer can serve (its back-reference table); method.time_offset sets the pairs' offset and raises this to it
    min_offset: int = 1  # and at least this many (0 allows identical views)
    warmup_views: int = 512  # views collected before the learner starts


@dataclass
class DatasetConfig:
    path: str = "data/rollout"  # dataset folder (shards + manifest.json)
    steps: int = 4096  # transitions to collect in total
    shard_size: int = 1024  # transitions per shard
    overwrite: bool = False  # replace a dataset made with a different config
    seed: int = 0  # seed of the rollout (envs and policy)
    format: str = "shards"  # what ciper-rollout writes: shards (.npy shards + manifest.json) or 3diebench (SIE's JPEG + latent layout, docs/3diebench.md)


@dataclass
class ModelConfig:
    encoder: str = "small"  # small (quick CPU runs) or resnet18
    stem: str = "cifar"  # resnet18 stem: cifar (3x3, no maxpool) or imagenet
    width: int = 16  # base width of the small encoder
    proj_hidden: int = 2048  # projection head hidden width
    proj_dim: int = 128  # projection head output
    pred_hidden: int = 1024  # prediction head hidden width


@dataclass
class MethodConfig:
    """What every method shares: its name, which pairs it trains on and the learner's view
    augmentations. A method's own settings (temperature, loss weights ...) extend this class
    in its file under ``learner/methods/``; ``method=<name>`` picks one (``--help`` lists them)."""

    name: str = "ciper"  # the method; set it with method=<name>, which also brings its own keys and defaults
    time_offset: int = 1  # max steps between a pair's views; 0 = two copies of one view (simclr)
    augment_crop: bool = True  # random resized crop of each view; its box joins the prediction target (off where the env's actions crop: conf/settle.py)
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])  # area range of the crop
    augment_flip: bool = False  # horizontal flip (off: a mirror reverses the sign of lateral actions)
    augment_color: bool = True  # colour jitter and random grayscale; their factors join the target (off where the env's actions recolour)
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])  # brightness, contrast, saturation, hue strengths
    jitter_p: float = 0.8  # probability that a view is colour-jittered
    grayscale_p: float = 0.2  # probability that a view is turned grey

    def check(self) -> None:
        """Raise ``ValueError`` naming the first key out of range (``method.key=value: expected ...``);
        a method's settings extend it with their own keys."""
        if isinstance(self.time_offset, bool) or not isinstance(self.time_offset, int) or self.time_offset < 0:
            raise ValueError(f"method.time_offset={self.time_offset!r}: expected an int >= 0")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"method.crop_scale={list(self.crop_scale)}: expected [low, high] with 0 < low <= high <= 1")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(f"method.jitter={list(self.jitter)}: expected 4 strengths (brightness, contrast, "
                             "saturation, hue) >= 0, hue <= 0.5")  # fmt: skip
        for key in ("jitter_p", "grayscale_p"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"method.{key}={getattr(self, key)!r}: expected a probability in [0, 1]")


def check_positive(settings: Any, *keys: str) -> None:
    """``method.<key>=value: expected a number > 0`` for the first of ``keys`` that is not."""
    for key in keys:
        if not getattr(settings, key) > 0:
            raise ValueError(f"method.{key}={getattr(settings, key)!r}: expected a number > 0")


def check_not_negative(settings: Any, *keys: str) -> None:
    """``method.<key>=value: expected a number >= 0`` for the first of ``keys`` that is not."""
    for key in keys:
        if not getattr(settings, key) >= 0:
            raise ValueError(f"method.{key}={getattr(settings, key)!r}: expected a number >= 0")


@dataclass
class OptimConfig:
    lr: float = 5e-4  # AdamW learning rate (Ciper-SimCLR)
    weight_decay: float = 1e-6  # AdamW weight decay
    warmup_steps: int = 20  # linear warm-up before the cosine schedule


@dataclass
class TrainConfig:
    mode: str = "online"  # online (collectors fill the buffer while training) or offline
    steps: int = 300  # optimisation steps
    batch_size: int = 64  # pairs per step (256 in the reference, smaller for CPU runs)
    replay_ratio: float = 4.0  # pairs trained per collected view: the learner waits above it, collectors pause below
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool | None = None  # bf16 autocast; null = per device (on for CUDA, off for CPU: ~10x slower there)
    channels_last: bool | None = None  # channels_last memory format; null = per device (on for CUDA and CPU)
    compile: bool = False  # torch.compile the model
    seed: int = 0  # seeds torch, numpy and the collectors
    checkpoint_every: int = 100  # steps between periodic checkpoints
    log_every: int = 10  # steps between scalar logs
    resume: bool = True  # continue from the run folder's last checkpoint if there is one
    allow_changes: bool = False  # let a resume change settings (optim.lr, train.batch_size ...); recorded in config_changes.json
    stop_after: int | None = None  # checkpoint and stop after this many steps of this invocation
    dataset: str | None = None  # dataset folder for mode=offline
    loader_workers: int = 0  # DataLoader workers for mode=offline
    evaluate: bool = True  # run the frozen-encoder evaluation at the end


@dataclass
class EvalConfig:
    checkpoint: str | None = None  # checkpoint to evaluate (ciper-eval)
    reference: str | None = None  # evaluate a reference instead: oracle | noise | nuisance | pixels | random
    views_per_object: int = 24  # views rendered per object for evaluation
    objects_limit: int | None = None  # evaluate on this many objects per split (evenly spaced); None = all
    train_split: str = "train"  # objects whose views train the probes
    test_split: str = "test"  # held-out objects (by-object split)
    probe_epochs: int = 200  # most epochs of the relative-pose MLP (it stops early on held-out training objects)
    knn_k: int = 20  # neighbours of the kNN classifier
    seed: int = 1234  # seed of the evaluation views (fixed across methods)
    plots: bool = True  # write embedding PNGs


@dataclass
class ReportConfig:
    # CIPER, its contrastive half (what predicting the action adds), the baselines, the ceiling
    methods: list[str] = field(default_factory=lambda: ["ciper", "ciper_contrastive", "simclr", "simclr_tt", "predict", "supervised"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # one run per method and seed
    steps: int = 300  # training steps per run
    batch_size: int = 64  # pairs per step
    encoder: str = "small"  # encoder of every run
    mode: str = "offline"  # offline: all methods read one shared dataset (same data, fair)
    dataset_steps: int = 6144  # transitions in the shared dataset
    overrides: list[str] = field(default_factory=list)  # key=value overrides of every run (e.g. eval budget), before the user's
    method_overrides: dict[str, list[str]] = field(default_factory=dict)  # method -> key=value overrides of its runs only, after the user's (add one: +report.method_overrides.simclr=[method.time_offset=1])
    variants: dict[str, list[str]] = field(default_factory=dict)  # name -> overrides of every method's runs under it (after the report's own keys): each method x variant x seed is a run, labelled method@name
    curve_key: str | None = None  # a config key that differs across the variants (e.g. train.steps): the headline scores are plotted against it
    ceiling: str | None = "supervised"  # the method whose per-column scores decide what is learnable at this budget (None: no such check)
    ours: str = "ciper"  # the method the target checks are about
    baseline: str = "simclr"  # what the target checks compare it with
    comparisons: list[list[str]] = field(default_factory=lambda: [["ciper", "ciper_contrastive"], ["ciper", "simclr"]])  # [a, b]: a table of the paired per-seed differences a - b (a - its contrastive half: what the prediction adds)


@dataclass
class ViewConfig:
    source: str = "env"  # env (a live rollout of env.* with policy.*) or dataset (dataset.path)
    rows: int = 4  # episodes shown, one grid row each
    steps: int = 8  # consecutive steps shown per row
    video_steps: int = 48  # frames of the video
    video_format: str = "gif"  # gif (Pillow) or mp4 (OpenCV: H.264 where the build has it, else mp4v)
    fps: int = 8  # video frames per second
    upscale: int = 2  # integer magnification of each view (nearest neighbour)
    seed: int = 0  # seed of the live rollout


@dataclass
class CiperConfig:
    env: EnvConfig = field(default_factory=lambda: EnvConfig(action_set=ACTION_SET_OF_ENV_ID))
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    run_dir: str = "${hydra:run.dir}"  # this run's folder, runs/<script>/<date>/ unless hydra.run.dir=... (saved resolved)


# Training steps per run of report=static and report=objects, from the measured pilot
# (docs/pilot_sweep.md; width 16, lr 5e-3, 32 px). Static: SimCLR 27 points above raw pixels
# on digits after 600 steps; 1,000 steps make the whole report 16 min on 2 idle cores.
# Objects: SimCLR's category rose with steps (+1.5 points over pixels at 600, +3.6 at 3,000)
# and more with crops that keep the object in view (crop_scale 0.5-1: +6.0 at 1,500);
# 2,500 steps fit 12 runs and 19 evaluations in ~60 min.
STATIC_STEPS = 1000
STATIC_METHODS = ["ciper", "ciper_contrastive", "simclr_tt", "predict", "supervised"]  # simclr = ciper_contrastive here
OBJECTS_STEPS = 2500
# The active observer's setup shared by report=objects, scaling and policies: the new scene,
# camera and object actions, time pairs, Kornia augmentations (simclr: two augmentations of one
# view) with crops of at least half the view, so the object stays in it. Probes on every
# object, 16 views each: the relative-pose probe needs the pairs to reach its ceiling on the
# rotation columns (oracle 0.88-0.91; learner/evaluation/scores.py POSE_PROBE_ROWS).
OBJECTS_SETUP = ("env.action_set=observer", "env.image_size=32", "env.episode_steps=16", "model.width=16",
                 "optim.lr=5e-3", "method.crop_scale=[0.5,1.0]", "eval.views_per_object=16")  # fmt: skip
# report=scaling's budgets, x2 apart: 2 methods x 3 seeds x 7,500 steps + 31 evaluations took
# 57 min 22 s on the idle 2-core machine (0.069 s/step; docs/report_scaling.md); 625-5,000
# would be ~72 min.
SCALING_STEPS = (500, 1000, 2000, 4000)
# CIPER's pairs on the objects setup: views up to 4 steps apart, its contrastive half on the same
# pairs. Measured at 3 seeds (docs/report_objects.md): CIPER's best setting (relative pose 0.301
# vs 0.290 with one-step pairs, every seed); the head's share shrinks (+0.005 vs +0.016), since
# wider pairs help the contrastive half more. At offset 4 the contrastive half is simclr_tt
# (bit-identical runs), so report=objects has no simclr_tt row.
OBJECTS_PAIRS = {"ciper": ["method.time_offset=4"], "ciper_contrastive": ["method.time_offset=4"]}
OBJECTS_METHODS = ["ciper", "ciper_contrastive", "simclr", "predict", "supervised"]
POLICIES_STEPS = OBJECTS_STEPS  # report=policies: the objects budget, online

GROUP_OPTIONS: dict[str, dict[str, Any]] = {
    "policy": {
        "random": PolicyConfig(name="random"),
        "orbit": PolicyConfig(name="orbit"),
        "smooth": PolicyConfig(name="smooth"),
        "curious": PolicyConfig(name="curious"),
    },
    "collector": {
        "local": CollectorConfig(kind="local"),
        "ray": CollectorConfig(kind="ray"),
    },
    "report": {
        # The <= 10 min smoke test of the report code on 2 CPU cores (12 runs + dataset + 19
        # evaluations): 32x32 views, 300 steps, probes on 120 + 120 objects x 16 views.
        "quick": ReportConfig(steps=300, dataset_steps=4096, overrides=[
            "env.image_size=32", "eval.views_per_object=16", "eval.objects_limit=120"]),
        "paper": ReportConfig(steps=20000, batch_size=256, encoder="resnet18", dataset_steps=200000),
        # Issue 10's presets, each <= 90 min on 2 idle CPU cores; budget from the measured pilot
        # (docs/pilot_sweep.md), time estimate in the README. Static images: digits under the
        # env's geometric, photometric and flip actions (the augmentations whose parameters
        # CIPER predicts; the learner's own would double them), so SimCLR pairs two augmented
        # views of one image one step apart: it is CIPER's contrastive half, ciper_contrastive,
        # the row and baseline here (simclr keeps that override if a user adds it back).
        "static": ReportConfig(steps=STATIC_STEPS, dataset_steps=16384, methods=list(STATIC_METHODS), baseline="ciper_contrastive",
                               comparisons=[["ciper", "ciper_contrastive"]], method_overrides={"simclr": ["method.time_offset=1"]}, overrides=[
            "env.id=ciper/ImageView-v0", "env.action_set=full", "env.image_size=32", "env.episode_steps=16",
            "policy=random", "method.augment_crop=false", "method.augment_color=false", "model.width=16",
            "optim.lr=5e-3", "eval.views_per_object=4", "eval.objects_limit=300"]),
        # The active observer (OBJECTS_SETUP) from the smooth policy, one shared dataset.
        "objects": ReportConfig(methods=list(OBJECTS_METHODS), steps=OBJECTS_STEPS, dataset_steps=16384,
                                overrides=list(OBJECTS_SETUP), method_overrides=dict(OBJECTS_PAIRS)),
        # Does the head's effect grow with compute? CIPER and its contrastive half on the objects
        # setup at four budgets (one shared dataset), scores plotted against train.steps.
        "scaling": ReportConfig(
            methods=["ciper", "ciper_contrastive"], steps=OBJECTS_STEPS, dataset_steps=16384, overrides=list(OBJECTS_SETUP),
            method_overrides=dict(OBJECTS_PAIRS),
            variants={str(n): [f"train.steps={n}"] for n in SCALING_STEPS}, curve_key="train.steps", ceiling=None,
            ours=f"ciper@{SCALING_STEPS[-1]}", baseline=f"ciper_contrastive@{SCALING_STEPS[-1]}",
            comparisons=[["ciper", "ciper_contrastive"]]),
        # Does the observer's choice of views matter? Online CIPER on the objects setup, collectors
        # in the background, one run per policy and seed; paired differences against random. It keeps
        # CIPER's one-step pairs, as measured (docs/report_policies.md): the question is the policy.
        "policies": ReportConfig(
            methods=["ciper"], steps=POLICIES_STEPS, mode="online", overrides=list(OBJECTS_SETUP),
            variants={p: [f"policy={p}"] for p in ("random", "smooth", "orbit", "curious")}, ceiling=None,
            ours="ciper@curious", baseline="ciper@random",
            comparisons=[[f"ciper@{p}", "ciper@random"] for p in ("smooth", "orbit", "curious")]),
    },
}

DEFAULT_GROUPS = {"policy": "smooth", "collector": "local", "report": "quick"}


def register_group(group: str, options: dict[str, Any], default: str) -> None:
    """Add a config group whose options a higher layer defines (the learner's ``method``
    group: each method's settings live in its own file). Composition includes it, with
    ``default`` chosen, once registered; a program that never registers it (``ciper-rollout``)
    gets the schema's base node, e.g. ``MethodConfig``."""
    if default not in options:
        raise ValueError(f"default={default!r}: expected one of the options {sorted(options)}")
    GROUP_OPTIONS[group] = dict(options)
    DEFAULT_GROUPS[group] = default


RUN_DIR = "runs/${hydra:job.name}/${now:%Y-%m-%d_%H-%M-%S}"


def register_configs() -> None:
    """Register the schema, the group options, the primary config ``ciper`` and the resolver
    of env.action_set's default."""
    if not OmegaConf.has_resolver("env_default_action_set"):
        OmegaConf.register_new_resolver("env_default_action_set", default_action_set)
    store = ConfigStore.instance()
    store.store(name="ciper_schema", node=CiperConfig, provider="ciper")
    for group, options in GROUP_OPTIONS.items():
        for name, node in options.items():
            store.store(group=group, name=name, node=node, provider="ciper")
    defaults: list[Any] = ["ciper_schema"]
    defaults += [{group: option} for group, option in DEFAULT_GROUPS.items()]
    defaults.append("_self_")
    primary = {
        "defaults": defaults,
        "hydra": {"run": {"dir": RUN_DIR}, "sweep": {"dir": "runs/${hydra.job.name}/multirun/${now:%Y-%m-%d_%H-%M-%S}"}},
    }
    store.store(name="ciper", node=primary, provider="ciper")
