"""The object catalogue: which meshes the world can show, their categories, splits and colours.

A catalogue is a CSV (columns ``object_id,category,mesh,scale,split,rgba``; see
``assets/README.md``) read into an immutable `ObjectCatalog`. Mesh paths are resolved at
load time: ``pybullet_data:`` paths against pybullet's data folder, relative paths against
the CSV's own folder, so a user catalogue can sit next to its own OBJ files. Every row is
validated when loaded and errors name the row, the object and the bad value. Loading stays
cheap (existence and a vertex-line probe per mesh, no full parse) because the default
catalogue lists over a thousand meshes; `load_obj_vertices` parses one mesh on demand, for
the env's size normalisation.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test", "extra")
SELECTIONS: tuple[str, ...] = (*SPLITS, "all", "categorised")
COLUMNS: tuple[str, ...] = ("object_id", "category", "mesh", "scale", "split", "rgba")
PYBULLET_DATA_PREFIX = "pybullet_data:"
_PROBE_BYTES = 1 << 13


@dataclass(frozen=True)
class CatalogEntry:
    """One object identity: a mesh with its category, size, split and colour."""

    object_id: str
    category: str  # "" when the object has no category label
    mesh_path: Path  # resolved absolute path to the OBJ
    scale: float  # multiplier of the normalised size (1.0 = bounding radius 0.5)
    split: str  # one of SPLITS
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class ObjectCatalog:
    """Immutable list of entries; a category's label index is its position in `categories`."""

    entries: tuple[CatalogEntry, ...]
    categories: tuple[str, ...] = field(init=False)  # sorted unique non-empty categories

    def __post_init__(self) -> None:
        categories = tuple(sorted({e.category for e in self.entries if e.category}))
        object.__setattr__(self, "categories", categories)

    def category_index(self, name: str) -> int:
        """Label index of a category; -1 for the empty category."""
        if name == "":
            return -1
        try:
            return self.categories.index(name)
        except ValueError:
            raise ValueError(f"category={name!r}: not in catalogue {self.categories}") from None

    def select(self, split: str) -> list[int]:
        """Entry indices of a split, or of "all", or of "categorised" (train + test)."""
        if split not in SELECTIONS:
            raise ValueError(f"split={split!r}: expected one of {SELECTIONS}")
        wanted = {"all": set(SPLITS), "categorised": {"train", "test"}}.get(split, {split})
        return [i for i, e in enumerate(self.entries) if e.split in wanted]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> CatalogEntry:
        return self.entries[index]


def default_catalog_path() -> Path:
    """``<repo>/assets/objects.csv``, found relative to this package, not the working dir."""
    return Path(__file__).resolve().parent.parent / "assets" / "objects.csv"


@functools.cache
def _pybullet_data_dir() -> Path:
    import pybullet_data  # deferred: plain catalogues need no pybullet

    return Path(pybullet_data.getDataPath()).resolve()


def _has_vertex_line(path: Path) -> bool:
    """True when the file holds a ``v`` line; real OBJs have one in their first block."""
    tail = b"\n"
    with path.open("rb") as handle:
        while block := handle.read(_PROBE_BYTES):
            text = tail + block
            if b"\nv " in text or b"\nv\t" in text:
                return True
            tail = block[-2:]
    return False


def load_obj_vertices(path: Path) -> np.ndarray:
    """Vertex positions (V, 3) float64 of an OBJ file, from its ``v`` lines."""
    path = Path(path)
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        # Only the first three numbers: some OBJs append a w or vertex colours.
        rows = [line.split()[1:4] for line in handle if line.startswith(("v ", "v\t"))]
    if not rows:
        raise ValueError(f"mesh {path}: no vertex ('v') lines")
    try:
        vertices = np.asarray(rows, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"mesh {path}: malformed vertex line ({error})") from None
    if vertices.shape[1] != 3 or not np.isfinite(vertices).all():
        raise ValueError(f"mesh {path}: vertices must be three finite numbers each")
    return vertices


def _parse_row(row: dict[str, str], where: str, csv_dir: Path) -> CatalogEntry:
    object_id = (row["object_id"] or "").strip()
    if not object_id:
        raise ValueError(f"{where}: object_id is empty")
    where = f"{where} (object_id={object_id!r})"

    mesh = (row["mesh"] or "").strip()
    if not mesh:
        raise ValueError(f"{where}: mesh is empty")
    if mesh.startswith(PYBULLET_DATA_PREFIX):
        mesh_path = _pybullet_data_dir() / mesh[len(PYBULLET_DATA_PREFIX):]
    else:
        mesh_path = csv_dir / Path(mesh).expanduser()  # an absolute mesh path wins the join
    # normpath, not resolve(): one realpath per row would dominate the load time.
    mesh_path = Path(os.path.normpath(mesh_path))
    if not mesh_path.is_file():
        raise ValueError(f"{where}: mesh={mesh!r}: file not found at {mesh_path}")
    try:
        if not _has_vertex_line(mesh_path):
            raise ValueError(f"{where}: mesh={mesh!r}: no vertex ('v') lines in {mesh_path}")
    except OSError as error:
        raise ValueError(f"{where}: mesh={mesh!r}: unreadable ({error})") from None

    try:
        scale = float(row["scale"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: scale={row['scale']!r}: expected a number") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{where}: scale={scale}: must be finite and > 0")

    split = (row["split"] or "").strip()
    if split not in SPLITS:
        raise ValueError(f"{where}: split={split!r}: expected one of {SPLITS}")

    try:
        rgba = tuple(float(c) for c in (row["rgba"] or "").split())
    except ValueError:
        rgba = ()
    if len(rgba) != 4 or not all(0.0 <= c <= 1.0 for c in rgba):
        raise ValueError(f"{where}: rgba={row['rgba']!r}: expected four numbers in [0, 1] "
                         "separated by spaces")

    return CatalogEntry(object_id=object_id, category=(row["category"] or "").strip(),
                        mesh_path=mesh_path, scale=scale, split=split,
                        rgba=(rgba[0], rgba[1], rgba[2], rgba[3]))


def load_catalog(path: str | Path | None = None) -> ObjectCatalog:
    """Read and validate a catalogue CSV (default: `default_catalog_path`)."""
    path = Path(path) if path is not None else default_catalog_path()
    if not path.is_file():
        raise FileNotFoundError(f"catalogue {path}: file not found")
    csv_dir = path.resolve().parent
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"catalogue {path}: missing columns {missing}; "
                             f"expected {list(COLUMNS)}")
        entries: list[CatalogEntry] = []
        first_row: dict[str, int] = {}
        for line_number, row in enumerate(reader, start=2):  # line 1 is the header
            entry = _parse_row(row, f"catalogue {path} line {line_number}", csv_dir)
            if entry.object_id in first_row:
                raise ValueError(f"catalogue {path} line {line_number}: duplicate object_id="
                                 f"{entry.object_id!r} (first on line "
                                 f"{first_row[entry.object_id]})")
            first_row[entry.object_id] = line_number
            entries.append(entry)
    if not entries:
        raise ValueError(f"catalogue {path}: no objects listed")
    return ObjectCatalog(tuple(entries))
