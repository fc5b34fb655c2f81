"""Tests of the object catalogue (envs/catalog.py) and the procedural shape library (tools/build_meshes.py)."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pybullet as p
import pytest

from envs.catalog import (
    SELECTIONS,
    ObjectCatalog,
    default_catalog_path,
    load_catalog,
    load_obj_vertices,
)
from tools import build_meshes

ASSETS = default_catalog_path().parent
HEADER = "object_id,category,mesh,scale,split,rgba"


@pytest.fixture(scope="module")
def catalog() -> ObjectCatalog:
    return load_catalog()


def _procedural_entries(catalog: ObjectCatalog) -> list:
    return [catalog[i] for i in catalog.select("categorised")]


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positions, normals, face vertex indices and face normal indices (0-based)."""
    positions, normals, faces, face_normals = [], [], [], []
    for line in path.read_text().splitlines():
        tag, *values = line.split() or [""]
        if tag == "v":
            positions.append([float(x) for x in values])
        elif tag == "vn":
            normals.append([float(x) for x in values])
        elif tag == "f":
            corners = [c.split("//") for c in values]
            faces.append([int(c[0]) - 1 for c in corners])
            face_normals.append([int(c[1]) - 1 for c in corners])
    return (np.array(positions), np.array(normals), np.array(faces), np.array(face_normals))


def test_default_catalogue_has_twelve_categories_of_forty_objects(catalog: ObjectCatalog) -> None:
    counts = Counter(e.category for e in catalog.entries if e.category)
    assert len(catalog.categories) == 12
    assert tuple(sorted(counts)) == catalog.categories
    assert all(n == 40 for n in counts.values()), counts
    assert catalog.category_index(catalog.categories[3]) == 3
    assert catalog.category_index("") == -1


def test_split_is_by_object_and_every_category_has_test_objects(catalog: ObjectCatalog) -> None:
    train = {catalog[i].object_id for i in catalog.select("train")}
    test = {catalog[i].object_id for i in catalog.select("test")}
    assert train and test and not train & test
    for category in catalog.categories:
        splits = Counter(e.split for e in catalog.entries if e.category == category)
        assert splits["test"] >= 1 and splits["train"] >= 1, (category, splits)
    assert len(catalog.select("all")) == len(catalog)
    assert sorted(catalog.select("categorised")) == sorted(
        catalog.select("train") + catalog.select("test"))


def test_extras_include_random_urdfs_without_category(catalog: ObjectCatalog) -> None:
    extras = [catalog[i] for i in catalog.select("extra")]
    assert len(extras) >= 1000
    assert all(e.category == "" and e.mesh_path.is_file() for e in extras)


def test_unknown_selection_names_it_and_the_valid_ones(catalog: ObjectCatalog) -> None:
    with pytest.raises(ValueError, match="validation") as error:
        catalog.select("validation")
    assert all(name in str(error.value) for name in SELECTIONS)


def test_colours_are_distinct_per_procedural_object(catalog: ObjectCatalog) -> None:
    colours = [e.rgba for e in _procedural_entries(catalog)]
    assert len(set(colours)) == len(colours)


def test_procedural_meshes_are_centred_with_radius_half(catalog: ObjectCatalog) -> None:
    for entry in _procedural_entries(catalog):
        v = load_obj_vertices(entry.mesh_path)
        centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
        assert np.abs(centre).max() < 1e-6, entry.object_id
        assert abs(np.linalg.norm(v, axis=1).max() - 0.5) < 1e-6, entry.object_id


def test_procedural_meshes_are_small_and_wound_outward(catalog: ObjectCatalog) -> None:
    for entry in _procedural_entries(catalog):
        positions, normals, faces, face_normals = _read_obj(entry.mesh_path)
        assert len(faces) < 800, entry.object_id
        a, b, c = positions[faces[:, 0]], positions[faces[:, 1]], positions[faces[:, 2]]
        assert np.einsum("ij,ij->", a, np.cross(b, c)) > 0, entry.object_id  # signed volume
        # The winding's normal agrees with the stored vertex normals on every face.
        geometric = np.cross(b - a, c - a)
        stored = normals[face_normals].sum(axis=1)
        assert (np.einsum("ij,ij->i", geometric, stored) > 0).all(), entry.object_id


def test_instances_of_a_category_differ_in_shape(catalog: ObjectCatalog) -> None:
    for category in catalog.categories:
        shapes = {load_obj_vertices(e.mesh_path).round(4).tobytes()
                  for e in catalog.entries if e.category == category}
        assert len(shapes) == sum(e.category == category for e in catalog.entries), category


def test_regeneration_is_deterministic(tmp_path: Path) -> None:
    categories = ["mug", "star", "table"]
    written = build_meshes.write_meshes(tmp_path, categories)
    assert len(written) == 3 * build_meshes.INSTANCES_PER_CATEGORY
    for path in written:
        committed = ASSETS / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), committed
    rows = build_meshes.catalogue_rows(build_meshes.CATEGORIES)
    committed_rows = list(csv.DictReader((ASSETS / "objects.csv").open()))[: len(rows)]
    assert rows == committed_rows


def _write_csv(folder: Path, *rows: str) -> Path:
    path = folder / "objects.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


@pytest.fixture()
def user_folder(tmp_path: Path) -> Path:
    """A user catalogue folder holding one OBJ next to where its CSV goes."""
    shutil.copy(ASSETS / "meshes" / "mug" / "mug_0.obj", tmp_path / "cup.obj")
    return tmp_path


def test_user_csv_resolves_relative_paths_against_its_folder(user_folder: Path) -> None:
    path = _write_csv(user_folder, "cup,mug,cup.obj,2.0,train,1 0 0 1",
                      "duck,,pybullet_data:duck.obj,1,extra,0.1 0.2 0.3 1")
    catalog = load_catalog(path)
    assert catalog[0].mesh_path == user_folder / "cup.obj"
    assert catalog[0].scale == 2.0 and catalog[0].rgba == (1.0, 0.0, 0.0, 1.0)
    assert catalog[1].mesh_path.is_file() and catalog.categories == ("mug",)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (["cup,mug,nowhere.obj,1,train,1 0 0 1"], "nowhere.obj"),
        (["cup,mug,cup.obj,1,validation,1 0 0 1"], "validation"),
        (["cup,mug,cup.obj,1,train,1 0 0 1", "cup,mug,cup.obj,1,test,1 0 0 1"], "duplicate.*'cup'"),
        (["cup,mug,cup.obj,0,train,1 0 0 1"], "scale=0"),
        (["cup,mug,cup.obj,-1,train,1 0 0 1"], "scale=-1"),
        (["cup,mug,cup.obj,1,train,1 0 0"], "rgba='1 0 0'"),
        (["cup,mug,cup.obj,1,train,red"], "rgba='red'"),
        (["cup,mug,empty.obj,1,train,1 0 0 1"], "empty.obj.*no vertex"),
    ],
)
def test_bad_rows_name_the_offending_value(user_folder: Path, rows: list[str],
                                           expected: str) -> None:
    (user_folder / "empty.obj").write_text("# nothing here\n")
    with pytest.raises(ValueError, match=expected) as error:
        load_catalog(_write_csv(user_folder, *rows))
    assert "object_id='cup'" in str(error.value)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "objects.csv"
    path.write_text("object_id,mesh\ncup,cup.obj\n")
    with pytest.raises(ValueError, match="category.*scale.*split.*rgba"):
        load_catalog(path)


@pytest.fixture(scope="module")
def pybullet_client():
    client = p.connect(p.DIRECT)
    yield client
    p.disconnect(client)


def test_every_categorised_mesh_loads_and_renders(catalog: ObjectCatalog,
                                                  pybullet_client: int) -> None:
    view = p.computeViewMatrixFromYawPitchRoll([0, 0, 0], 1.8, 30, -30, 0, 2)
    projection = p.computeProjectionMatrixFOV(45, 1, 0.1, 10)
    named = [catalog[i] for i in catalog.select("extra")
             if "random_urdfs" not in str(catalog[i].mesh_path)]
    for entry in _procedural_entries(catalog) + named:
        # pybullet_data meshes are not normalised on disk: scale them here as the env does.
        v = load_obj_vertices(entry.mesh_path)
        centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
        scale = 0.5 / np.linalg.norm(v - centre, axis=1).max()
        shape = p.createVisualShape(p.GEOM_MESH, fileName=str(entry.mesh_path),
                                    meshScale=[scale] * 3, rgbaColor=list(entry.rgba),
                                    visualFramePosition=list(-centre * scale),
                                    physicsClientId=pybullet_client)
        assert shape >= 0, entry.object_id
        body = p.createMultiBody(baseVisualShapeIndex=shape, physicsClientId=pybullet_client)
        _, _, rgb, _, segmentation = p.getCameraImage(
            64, 64, view, projection, renderer=p.ER_TINY_RENDERER,
            physicsClientId=pybullet_client)
        p.removeBody(body, physicsClientId=pybullet_client)
        mask = np.reshape(segmentation, (64, 64)) == body
        assert mask.sum() > 64, (entry.object_id, int(mask.sum()))
        pixels = np.reshape(rgb, (64, 64, 4))[..., :3][mask].astype(np.float64)
        assert pixels.max() > 60, entry.object_id  # lit, not a black inside-out silhouette
