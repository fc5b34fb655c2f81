"""The 3DIEBench layout on disk: where its views, latents and split lists are, read and written.

3DIEBench (Garrido et al. 2023, the SIE paper; facebookresearch/SIE, ``data/README.md`` and
``src/dataset.py``) keeps every object in ``<root>/<synset>/<object_id>/``, each view as
``image_<k>.jpg`` beside its latents ``latent_<k>.npy`` (k = 0 .. views-1), and per split a
list of object paths ``<split>_images.npy`` (entries ``/<synset>/<object_id>``) with the
category labels ``<split>_labels.npy`` (int, by label index). SIE ships ``train`` and ``val``
lists; here the held-out split ``test`` reads ``test_*`` where it exists, else SIE's
``val_*``. This module knows file names and formats only; what the latents mean is
:mod:`envs.iebench_state`'s. Every problem is a ``ValueError`` or ``FileNotFoundError``
naming the file. Views are read as SIE's loader reads them (PIL's ``convert("RGB")``):
RGB uint8, whatever order its generator wrote the channels in. Never unpickles.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import cv2
import numpy as np

IMAGE_PATTERN = re.compile(r"^image_(\d+)\.jpg$")
LATENT_PATTERN = re.compile(r"^latent_(\d+)\.npy$")
#: The held-out split's other name: SIE calls its held-out list ``val``.
SPLIT_ALIASES = {"test": "val"}
#: Written views: JPEG at quality 100 without chroma subsampling (4:4:4). Small views lose
#: most to the default 4:2:0 (5 grey levels at 32 px, quality 95); these lose about 0.5.
JPEG_OPTIONS = (cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"


def image_path(folder: Path, k: int) -> Path:
    return Path(folder) / f"image_{int(k)}.jpg"


def latent_path(folder: Path, k: int) -> Path:
    return Path(folder) / f"latent_{int(k)}.npy"


def list_paths(root: Path, split: str) -> tuple[Path, Path]:
    """``<split>_images.npy`` and ``<split>_labels.npy`` as written (no alias)."""
    return Path(root) / f"{split}_images.npy", Path(root) / f"{split}_labels.npy"


def available_splits(root: Path) -> list[str]:
    """The splits whose object list is in ``root``, sorted."""
    return sorted(p.name.removesuffix("_images.npy") for p in Path(root).glob("*_images.npy"))


def is_benchmark_folder(root: str | Path) -> bool:
    """True for a folder in the 3DIEBench layout: split lists, and no ``manifest.json`` (a
    ``ciper-rollout`` shard dataset)."""
    root = Path(root)
    return root.is_dir() and not (root / "manifest.json").exists() and bool(available_splits(root))


def resolve_split(root: Path, split: str) -> str:
    """The split whose lists are read for ``split``: itself, or its alias (``test`` -> ``val``)."""
    if list_paths(root, split)[0].is_file():
        return split
    alias = SPLIT_ALIASES.get(split)
    if alias is not None and list_paths(root, alias)[0].is_file():
        return alias
    also = f" (nor {alias}_images.npy)" if alias else ""
    raise FileNotFoundError(
        f"split={split!r}: no {split}_images.npy{also} in {root}; its split lists: {', '.join(available_splits(root)) or 'none'}"
    )


def split_lists(root: str | Path, split: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The object folders (relative, ``<synset>/<object_id>``) and int64 labels of ``split``."""
    root = Path(root)
    images, labels_file = list_paths(root, resolve_split(root, split))
    paths = _load_array(images)
    if paths.ndim != 1 or paths.dtype.kind not in "US":
        raise ValueError(f"{images}: expected a 1-D array of object paths '/<synset>/<object_id>', "
                         f"got {paths.dtype} {paths.shape}")  # fmt: skip
    objects = tuple(str(p.decode() if isinstance(p, bytes) else p).strip("/") for p in paths)
    for entry in objects:
        if len(Path(entry).parts) != 2:
            raise ValueError(f"{images}: entry {entry!r}: expected '/<synset>/<object_id>'")
    if not labels_file.is_file():
        raise FileNotFoundError(f"{labels_file}: missing; each <split>_images.npy needs its <split>_labels.npy")
    labels = _load_array(labels_file)
    if labels.shape != (len(objects),) or labels.dtype.kind not in "iu" or (labels < 0).any():
        raise ValueError(f"{labels_file}: expected {len(objects)} integer labels >= 0 (one per entry of {images.name}), "
                         f"got {labels.dtype} {labels.shape}")  # fmt: skip
    return objects, labels.astype(np.int64)


@functools.lru_cache(maxsize=8)
def category_names(root: str | Path) -> tuple[str, ...]:
    """The synset (category folder) of each label index, read from every split's lists; a
    label that no listed object carries is named ``label_<i>``."""
    root = Path(root)
    names: dict[int, str] = {}
    for split in available_splits(root):
        objects, labels = split_lists(root, split)
        for entry, label in zip(objects, labels.tolist(), strict=True):
            synset = Path(entry).parts[0]
            if names.setdefault(label, synset) != synset:
                raise ValueError(f"{list_paths(root, split)[1]}: label {label} holds synsets {names[label]!r} and {synset!r}: "
                                 "expected one synset per label")  # fmt: skip
    if not names:
        raise ValueError(f"{root}: the split lists name no object")
    return tuple(names.get(i, f"label_{i}") for i in range(max(names) + 1))


def view_count(folder: Path) -> int:
    """Views of one object folder: ``image_<k>.jpg`` and ``latent_<k>.npy`` for every k in
    0..n-1; a gap or a file without its partner is a ``FileNotFoundError`` naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: object folder of a split list is missing")
    images, latents = set(), set()
    for name in (entry.name for entry in folder.iterdir()):
        if match := IMAGE_PATTERN.match(name):
            images.add(int(match.group(1)))
        elif match := LATENT_PATTERN.match(name):
            latents.add(int(match.group(1)))
    count = max(images | latents, default=-1) + 1
    if count == 0:
        raise FileNotFoundError(f"{image_path(folder, 0)}: missing; the object folder holds no view")
    for k in range(count):
        if k in images and k in latents:
            continue
        missing, partner = image_path(folder, k), latent_path(folder, k)
        if k in images:
            missing, partner = partner, missing
        beside = f"{partner.name} is there" if k in images | latents else f"the folder has views up to {count - 1}"
        raise FileNotFoundError(f"{missing}: missing view {k} ({beside}); every view k needs image_{k}.jpg and latent_{k}.npy")
    return count


def read_view(path: Path, size: int) -> np.ndarray:
    """One view as RGB uint8 (size, size, 3), area-resized from its JPEG."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing view") from None
    # A file cut short can decode with only a warning (grey rows) in some builds; the markers tell.
    for marker, present in (("start", data[:2].tobytes() == _JPEG_START), ("end", _JPEG_END in data[-16:].tobytes())):
        if not present:
            raise ValueError(f"{path}: corrupt JPEG (no {marker}-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: corrupt JPEG (OpenCV cannot decode it)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != (size, size):
        shrink = image.shape[0] > size or image.shape[1] > size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return image


def read_latent(path: Path, length: int | None = None) -> np.ndarray:
    """One view's latents as float64 (length,); ``length`` None accepts any length >= 1."""
    try:
        latent = _load_array(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing latent") from None
    if latent.ndim != 1 or latent.dtype.kind not in "fiu" or latent.size == 0:
        raise ValueError(f"{path}: expected a 1-D array of numbers, got {latent.dtype} {latent.shape}")
    if length is not None and latent.size != length:
        raise ValueError(f"{path}: latent of length {latent.size}: expected {length} values, as every latent of this dataset")
    if not np.isfinite(latent).all():
        raise ValueError(f"{path}: latent holds non-finite values {latent.tolist()}")
    return latent.astype(np.float64)


def write_view(path: Path, view: np.ndarray) -> None:
    """An RGB uint8 view as a JPEG (``JPEG_OPTIONS``), read back RGB by PIL and by :func:`read_view`."""
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(view), cv2.COLOR_RGB2BGR), list(JPEG_OPTIONS)):
        raise OSError(f"{path}: OpenCV could not write the JPEG")


def write_latent(path: Path, latent: np.ndarray) -> None:
    np.save(path, np.asarray(latent, dtype=np.float64), allow_pickle=False)


def write_split_lists(root: Path, split: str, objects: list[str], labels: list[int]) -> None:
    """``<split>_images.npy`` (``/<synset>/<object_id>`` strings) and ``<split>_labels.npy`` (int64)."""
    images, labels_file = list_paths(root, split)
    np.save(images, np.array([f"/{o.strip('/')}" for o in objects], dtype=str), allow_pickle=False)
    np.save(labels_file, np.asarray(labels, dtype=np.int64), allow_pickle=False)


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: not a readable .npy file ({reason})") from None
