"""Labelled image sets the static-image world views: a synthetic default, image folders, CIFAR-10.

An `ImageSet` holds every image of a source in memory as one uint8 array with integer
labels, class names and a per-image train/test split, so the env only indexes an array.
Three sources, chosen by one string (:func:`load_image_set`): ``"default"`` (or None) is a
synthetic digit set generated deterministically at load time, so the world works offline
and in tests; a folder path laid out as ``root/<class_name>/*.png|jpg``; and
``"cifar10:<folder>"``, CIFAR-10's binary batches already on local disk (never downloaded).
Loaded sets are cached per process because every vectorised env copy would otherwise
regenerate or re-read the same images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SPLITS: tuple[str, ...] = ("train", "test")
SELECTIONS: tuple[str, ...] = (*SPLITS, "all")
DEFAULT_SOURCE = "default"
CIFAR10_PREFIX = "cifar10:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Every ``TEST_EVERY``-th image of a class (in a fixed order) is a test image: 80/20.
TEST_EVERY = 5

DEFAULT_IMAGE_SIZE = 96
DEFAULT_IMAGES_PER_CLASS = 60
_DEFAULT_SEED = 20230205  # fixed: the default set must be identical on every machine
_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_META_FILE = "batches.meta.txt"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """All images of one source; an image's label indexes ``class_names``."""

    images: np.ndarray  # uint8 (N, H, W, 3), RGB, read-only
    labels: np.ndarray  # int64 (N,)
    class_names: tuple[str, ...]
    splits: tuple[str, ...]  # per image, one of SPLITS
    image_ids: tuple[str, ...]  # per image, unique within the set
    source: str

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images {self.images.dtype} {self.images.shape}: expected uint8 (N, H, W, 3)")
        if not (len(self.labels) == len(self.splits) == len(self.image_ids) == n):
            raise ValueError(
                f"{n} images but {len(self.labels)} labels, {len(self.splits)} splits, "
                f"{len(self.image_ids)} ids"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels outside [0, {len(self.class_names)}) in {self.source}")

    def select(self, split: str) -> np.ndarray:
        """Indices (int64, ascending) of the images in ``split``: "train", "test" or "all"."""
        if split not in SELECTIONS:
            raise ValueError(f"split={split!r}: expected one of {SELECTIONS}")
        if split == "all":
            return np.arange(len(self.images), dtype=np.int64)
        return np.flatnonzero(np.asarray(self.splits) == split).astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)


def load_image_set(source: str | None = None) -> ImageSet:
    """The image set named by ``source``: None or "default", "cifar10:<folder>", or a folder."""
    if source is None or source == DEFAULT_SOURCE:
        return default_image_set()
    if not isinstance(source, str):
        raise ValueError(f"catalog={source!r}: expected None, 'default', 'cifar10:<folder>' or a folder path")
    if source.startswith(CIFAR10_PREFIX):
        return load_cifar10(source[len(CIFAR10_PREFIX):])
    return load_image_folder(source)


# ---------------------------------------------------------------- per-class split


def _split_by_class(labels: np.ndarray) -> tuple[str, ...]:
    """Deterministic 80/20 split by image within each class (every 5th image is test)."""
    splits = ["train"] * len(labels)
    for label in np.unique(labels):
        for rank, index in enumerate(np.flatnonzero(labels == label)):
            if rank % TEST_EVERY == TEST_EVERY - 1:
                splits[index] = "test"
    return tuple(splits)


def _frozen(images: np.ndarray) -> np.ndarray:
    # Sets are cached and shared between env instances: nobody may write into them.
    images.setflags(write=False)
    return images


# ---------------------------------------------------------------- synthetic default set

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A colour gradient in a random direction plus smooth low-frequency texture."""
    colours = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None] + 0.5  # (size, size) in [0, 1]
    cells = int(rng.integers(3, 9))
    texture = rng.normal(0, rng.uniform(5, 35), size=(cells, cells, 3)).astype(np.float32)
    image = cv2.resize(texture, (size, size), interpolation=cv2.INTER_CUBIC)
    # An outer product instead of a broadcast over the 3-wide last axis: several times faster.
    image += (t.reshape(-1, 1) @ (colours[1] - colours[0])[None, :] + colours[0]).reshape(size, size, 3)
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def _draw_digit(rng: np.random.Generator, image: np.ndarray, digit: int) -> None:
    """Draw ``digit`` in place: random font, height 40-70% of the side, contrasting colour."""
    size = image.shape[0]
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    thickness = int(rng.integers(max(1, size // 48), max(2, size // 12) + 1))
    text = str(digit)
    (width, height), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = rng.uniform(0.4, 0.7) * size / height
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    # Jitter around the centre but keep the glyph inside the image.
    slack_x = max(0, size - width) // 2
    slack_y = max(0, size - height - baseline) // 2
    x = size // 2 - width // 2 + int(rng.integers(-slack_x // 2, slack_x // 2 + 1))
    y = size // 2 + height // 2 + int(rng.integers(-slack_y // 2, slack_y // 2 + 1))
    # Text colour far from the background's mean luminance so the digit stays legible.
    background_luma = float(image.mean())
    colour = rng.uniform(0, 255, size=3)
    luma = float(colour @ (0.299, 0.587, 0.114))
    if abs(luma - background_luma) < 90:
        colour = colour * 0.35 if background_luma > 127 else 255 - (255 - colour) * 0.35
    cv2.putText(image, text, (x, y), font, scale, tuple(float(c) for c in colour), thickness, cv2.LINE_AA)


@functools.lru_cache(maxsize=4)
def default_image_set(
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS, size: int = DEFAULT_IMAGE_SIZE
) -> ImageSet:
    """Ten classes of synthetic digits 0-9 over textured gradients, generated deterministically.

    Each image varies font, size, stroke thickness, colour, position and background, so a
    class is an identity shared by visibly different images (the invariance the learner
    must find). Takes well under a second.
    """
    rng = np.random.default_rng(_DEFAULT_SEED)
    count = 10 * images_per_class
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(10, dtype=np.int64), images_per_class)
    for i, digit in enumerate(labels):
        images[i] = _background(rng, size)
        _draw_digit(rng, images[i], int(digit))
    ranks = np.tile(np.arange(images_per_class), 10)
    ids = tuple(f"digit{d}_{r:04d}" for d, r in zip(labels, ranks, strict=True))
    return ImageSet(
        images=_frozen(images),
        labels=labels,
        class_names=tuple(str(d) for d in range(10)),
        splits=_split_by_class(labels),
        image_ids=ids,
        source=DEFAULT_SOURCE,
    )


# ---------------------------------------------------------------- image folder


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop resized to ``size`` (keeps the aspect ratio of the content)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


@functools.lru_cache(maxsize=4)
def load_image_folder(root: str | Path, size: int = DEFAULT_IMAGE_SIZE) -> ImageSet:
    """Images laid out as ``root/<class_name>/*.png|jpg``; classes sorted by name.

    Images are centre-cropped to squares and resized to ``size`` so they share one array.
    The split is 80/20 per class by image, in file-name order.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise ValueError(
            f"catalog={str(root)!r}: not a folder (expected 'default', 'cifar10:<folder>' "
            "or a folder laid out as <root>/<class_name>/*.png|jpg)"
        )
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    images: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    class_names: list[str] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        for path in files:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"image {path}: unreadable (cv2.imread failed)")
            images.append(_square(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size))
            labels.append(label)
            ids.append(f"{class_dir.name}/{path.name}")
    if not images:
        raise ValueError(f"catalog={str(root)!r}: no images found under <root>/<class_name>/*.png|jpg")
    label_array = np.asarray(labels, dtype=np.int64)
    return ImageSet(
        images=_frozen(np.stack(images)),
        labels=label_array,
        class_names=tuple(class_names),
        splits=_split_by_class(label_array),
        image_ids=tuple(ids),
        source=str(folder),
    )


# ---------------------------------------------------------------- CIFAR-10 binary batches


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Records of 1 label byte + 3072 bytes (R, G, B planes of 32x32) -> images, labels."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(f"CIFAR-10 batch {path}: {raw.size} bytes is not a multiple of {_CIFAR_RECORD}")
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    images = records[:, 1:].reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


@functools.lru_cache(maxsize=2)
def load_cifar10(folder: str | Path) -> ImageSet:
    """CIFAR-10 from its binary batches in ``folder`` (``cifar-10-batches-bin``); never downloads.

    The five data batches are the train split and ``test_batch.bin`` the test split, as in
    the dataset's own protocol; class names come from ``batches.meta.txt``.
    """
    root = Path(folder)
    needed = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
    missing = [root / name for name in needed if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 binary batches not found: {missing[0]} is missing"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; expected the "
            "extracted 'CIFAR-10 binary version' (cifar-10-batches-bin) on local disk; "
            "nothing is downloaded"
        )
    class_names = tuple(
        line.strip() for line in (root / CIFAR10_META_FILE).read_text().splitlines() if line.strip()
    )
    parts = [_read_cifar_batch(root / name) for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and labels.max() >= len(class_names):
        raise ValueError(
            f"CIFAR-10 batches in {root}: label {labels.max()} but {CIFAR10_META_FILE} names "
            f"{len(class_names)} classes"
        )
    n_train = sum(len(p[1]) for p in parts[:-1])
    splits = ("train",) * n_train + ("test",) * len(parts[-1][1])
    ids = tuple(f"cifar10_train_{i:05d}" for i in range(n_train)) + tuple(
        f"cifar10_test_{i:05d}" for i in range(len(parts[-1][1]))
    )
    return ImageSet(
        images=_frozen(images),
        labels=labels,
        class_names=class_names,
        splits=splits,
        image_ids=ids,
        source=f"{CIFAR10_PREFIX}{root}",
    )
