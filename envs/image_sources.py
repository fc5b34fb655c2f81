"""Labelled image sets the static-image world views: a synthetic default, image folders, CIFAR-10.

An `ImageSet` holds every image of a source in memory as one uint8 array with integer
labels, class names and a per-image train/test split, so the env only indexes an array.
Three sources, chosen by one string (:func:`load_image_set`): ``"default"`` (or None) is a
synthetic digit set generated deterministically at load time, so the world works offline
and in tests; its images are digit shapes only (coverage masks), shown on a background
drawn per view from a pool shared by every image (:func:`background_pool`), so two views of
one image share the digit and nothing else; a folder path laid out as
``root/<class_name>/*.png|jpg``; and
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
#: The smallest side an image folder's image may have: a smaller one carries no shape to view.
MIN_IMAGE_SIDE = 8
#: The default digit set: 375 images per digit, 3,000 train and 750 test in all, at 64 px.
DEFAULT_IMAGES_PER_CLASS = 375
DIGIT_IMAGE_SIZE = 64
_DEFAULT_SEED = 20230205  # fixed: the default set must be identical on every machine
_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_META_FILE = "batches.meta.txt"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """All images of one source; an image's label indexes ``class_names``.

    ``images`` are either whole RGB pictures (N, H, W, 3) or, for a set whose backgrounds
    come from the shared pool (``composited``), foreground coverage masks (N, H, W) that
    :meth:`picture` lays over a pool background."""

    images: np.ndarray  # uint8 (N, H, W, 3) RGB, or (N, H, W) coverage when composited; read-only
    labels: np.ndarray  # int64 (N,)
    class_names: tuple[str, ...]
    splits: tuple[str, ...]  # per image, one of SPLITS
    image_ids: tuple[str, ...]  # per image, unique within the set
    source: str

    @property
    def composited(self) -> bool:
        """True when the images are coverage masks shown over pool backgrounds."""
        return self.images.ndim == 3

    def picture(self, index: int, background: int) -> np.ndarray:
        """The RGB picture (H, W, 3) uint8 of image ``index`` on pool background
        ``background`` (ignored, and best given as -1, for a set of whole pictures)."""
        if not self.composited:
            return self.images[index]
        return composite_digit(self.images[index], int(background))

    def __post_init__(self) -> None:
        n = len(self.images)
        shape_ok = self.images.ndim == 3 or (self.images.ndim == 4 and self.images.shape[-1] == 3)
        if self.images.dtype != np.uint8 or not shape_ok:
            raise ValueError(
                f"images {self.images.dtype} {self.images.shape}: expected uint8 (N, H, W, 3) or coverage (N, H, W)"
            )
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


@dataclass(frozen=True, eq=False)
class BackgroundPool:
    """Backgrounds shared by every digit: textures (P, H, W, 3) uint8 with, per entry, the
    ink colour of the digit and the halo colour around it (float32 (P, 3)), which contrast
    with each other so a digit stays legible on any background."""

    textures: np.ndarray
    ink: np.ndarray
    halo: np.ndarray


#: Backgrounds a digit can be shown on: a pool shared by every image, drawn per view, so two
#: views of one image need not share anything but the digit.
BACKGROUND_POOL_SIZE = 512


@functools.lru_cache(maxsize=2)
def background_pool(size: int = DIGIT_IMAGE_SIZE) -> BackgroundPool:
    """The pool of ``BACKGROUND_POOL_SIZE`` backgrounds, generated deterministically."""
    rng = np.random.default_rng([_DEFAULT_SEED, 7])
    textures = np.stack([_background(rng, size) for _ in range(BACKGROUND_POOL_SIZE)])
    ink = rng.uniform(0, 255, size=(BACKGROUND_POOL_SIZE, 3)).astype(np.float32)
    luma = ink @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    # Push the ink away from mid-grey and give it the opposite halo: dark ink, light halo.
    dark = luma < 128
    ink[dark] *= 0.5
    ink[~dark] = 255 - (255 - ink[~dark]) * 0.5
    halo = np.where(dark[:, None], 235.0, 20.0).astype(np.float32) * np.ones((1, 3), np.float32)
    return BackgroundPool(textures=_frozen(textures), ink=ink, halo=halo)


_HALO_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


def composite_digit(coverage: np.ndarray, background: int) -> np.ndarray:
    """A digit's coverage mask (H, W) uint8 in pool background ``background``'s ink, with a
    halo, over that background's texture: uint8 (H, W, 3)."""
    size = coverage.shape[0]
    pool = background_pool(size)
    if not 0 <= background < len(pool.textures):
        raise ValueError(f"background={background}: expected a pool index in [0, {len(pool.textures)})")
    ink = coverage.reshape(-1, 1).astype(np.float32) * (1.0 / 255.0)
    halo = cv2.dilate(coverage, _HALO_KERNEL).reshape(-1, 1).astype(np.float32) * (1.0 / 255.0)
    halo_only = halo * (1.0 - ink)
    # Pixels as rows and colours via outer products: much faster than broadcasting over RGB.
    picture = pool.textures[background].reshape(-1, 3) * (1.0 - halo_only - ink)
    picture += halo_only @ pool.halo[background][None, :]
    picture += ink @ pool.ink[background][None, :]
    return picture.reshape(size, size, 3).astype(np.uint8)


def _draw_digit(rng: np.random.Generator, size: int, digit: int) -> np.ndarray:
    """The coverage mask (size, size) uint8 of ``digit``: random font, height 40-70% of the
    side, stroke thickness, slant and position."""
    image = np.zeros((size, size), dtype=np.uint8)
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    thickness = int(rng.integers(max(1, size // 32), max(2, size // 10) + 1))
    text = str(digit)
    (width, height), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = rng.uniform(0.45, 0.7) * size / height
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    # Jitter around the centre but keep the glyph inside the image.
    slack_x = max(0, size - width) // 2
    slack_y = max(0, size - height - baseline) // 2
    x = size // 2 - width // 2 + int(rng.integers(-slack_x // 2, slack_x // 2 + 1))
    y = size // 2 + height // 2 + int(rng.integers(-slack_y // 2, slack_y // 2 + 1))
    cv2.putText(image, text, (x, y), font, scale, 255, thickness, cv2.LINE_AA)
    shear = rng.uniform(-0.25, 0.25)  # slant, about the image centre
    slant = np.array([[1.0, shear, -shear * size / 2], [0.0, 1.0, 0.0]])
    return cv2.warpAffine(image, slant, (size, size), flags=cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=4)
def default_image_set(
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS, size: int = DIGIT_IMAGE_SIZE
) -> ImageSet:
    """Ten classes of synthetic digits 0-9, generated deterministically (about a second).

    Each image varies font, size, stroke thickness, slant and position, so a class is an
    identity shared by visibly different images (the invariance the learner must find).
    The images are coverage masks: the env shows each view on a background (with ink and
    halo colours) from the shared :func:`background_pool`, so colour and background say
    nothing about the image or its class.
    """
    rng = np.random.default_rng(_DEFAULT_SEED)
    count = 10 * images_per_class
    images = np.empty((count, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(10, dtype=np.int64), images_per_class)
    for i, digit in enumerate(labels):
        images[i] = _draw_digit(rng, size, int(digit))
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
            if min(bgr.shape[:2]) < MIN_IMAGE_SIDE:
                raise ValueError(f"image {path}: {bgr.shape[1]}x{bgr.shape[0]} pixels, smaller than "
                                 f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}: scaled up to {size}x{size} it would show "
                                 "nothing to learn; remove it from the folder")  # fmt: skip
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
