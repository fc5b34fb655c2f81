"""Asset build script: writes the procedural shape library and ``assets/objects.csv``.

Run by developers, never imported by the env runtime (``envs/`` reads the meshes through
the catalogue), and kept outside ``assets/``, which holds data only: ``tools/`` is the
top-level home for such build scripts. ``python -m tools.build_meshes`` rewrites the meshes
and the catalogue, which also lists pybullet_data meshes as extra identities.

Each of twelve shape families (arch, chair, cone, ...) is a small numpy builder that draws
its shape parameters from a generator seeded by (library seed, family name, instance
number), so every instance differs in geometry, regeneration is byte-for-byte
deterministic, and adding a family leaves the others untouched. Builders assemble closed
primitives (extrusions of 2-D polygons, surfaces of revolution, swept tubes, boxes); each
primitive is wound counter-clockwise seen from outside, checked by its signed volume.
Every mesh is centred on its bounding-box centre and scaled to a bounding radius (largest
vertex norm) of 0.5, then written as OBJ with crease-aware vertex normals so flat faces look
flat and round ones smooth under TinyRenderer.
"""

from __future__ import annotations

import argparse
import colorsys
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

LIBRARY_SEED = 20230205
INSTANCES_PER_CATEGORY = 40
TEST_INSTANCES_PER_CATEGORY = 10
BOUNDING_RADIUS = 0.5
# Edges sharper than this keep separate normals on each side (flat shading across them).
CREASE_DEGREES = 40.0
# pybullet_data meshes checked to load and render with createVisualShape + TinyRenderer.
PYBULLET_NAMED_MESHES: tuple[tuple[str, str], ...] = (
    ("pb_duck", "duck.obj"),
    ("pb_teddy", "teddy2_VHACD_CHs.obj"),
    ("pb_bunny", "bunny.obj"),
    ("pb_soccerball", "soccerball.obj"),
    ("pb_sphere", "sphere_smooth.obj"),
)
RANDOM_URDF_COUNT = 1000
CATALOG_COLUMNS = ("object_id", "category", "mesh", "scale", "split", "rgba")


class Mesh(NamedTuple):
    """Triangle mesh: ``vertices`` (V, 3) float64 and ``faces`` (F, 3) int64 indices."""

    vertices: np.ndarray
    faces: np.ndarray


# ----------------------------------------------------------------------------- primitives


def _orient_outward(mesh: Mesh) -> Mesh:
    """Flip a closed part whose triangles face inward (negative signed volume)."""
    v, f = mesh
    signed_volume = np.einsum("ij,ij->", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]]))
    return mesh if signed_volume > 0 else Mesh(v, f[:, ::-1].copy())


def _merge(parts: Sequence[Mesh]) -> Mesh:
    vertices, faces, offset = [], [], 0
    for part in parts:
        vertices.append(part.vertices)
        faces.append(part.faces + offset)
        offset += len(part.vertices)
    return Mesh(np.concatenate(vertices), np.concatenate(faces))


def _loft(sections: Sequence[np.ndarray]) -> Mesh:
    """Skin a sequence of rings ((S, 3) arrays, same S) and poles ((3,) points).

    Consecutive sections are joined in the same parametric direction, so the result is
    consistently wound; `_orient_outward` then fixes the global sign.
    """
    vertices: list[np.ndarray] = []
    index_lists: list[np.ndarray] = []
    count = 0
    for section in sections:
        section = np.atleast_2d(section)
        vertices.append(section)
        index_lists.append(np.arange(count, count + len(section)))
        count += len(section)
    faces = []
    for a, b in zip(index_lists[:-1], index_lists[1:], strict=True):
        if len(a) > 1 and len(b) > 1:
            a1, b1 = np.roll(a, -1), np.roll(b, -1)
            faces.append(np.stack([a, a1, b1], axis=1))
            faces.append(np.stack([a, b1, b], axis=1))
        elif len(a) == 1:
            faces.append(np.stack([np.full_like(b, a[0]), np.roll(b, -1), b], axis=1))
        else:
            faces.append(np.stack([a, np.roll(a, -1), np.full_like(a, b[0])], axis=1))
    return _orient_outward(Mesh(np.concatenate(vertices), np.concatenate(faces)))


def _circle(segments: int, phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    t = phase + 2.0 * np.pi * np.arange(segments) / segments
    return np.cos(t), np.sin(t)


def _revolve(profile: Sequence[tuple[float, float]], segments: int,
             stretch: tuple[float, float] = (1.0, 1.0), phase: float = 0.0) -> Mesh:
    """Surface of revolution about z of a (radius, z) profile; open ends get flat caps."""
    profile = list(profile)
    if profile[0][0] > 0:
        profile.insert(0, (0.0, profile[0][1]))
    if profile[-1][0] > 0:
        profile.append((0.0, profile[-1][1]))
    cos_t, sin_t = _circle(segments, phase)
    sections = []
    for r, z in profile:
        if r <= 0:
            sections.append(np.array([0.0, 0.0, z]))
        else:
            sections.append(np.stack([r * stretch[0] * cos_t, r * stretch[1] * sin_t,
                                      np.full(segments, z)], axis=1))
    return _loft(sections)


def _triangulate_polygon(points: np.ndarray) -> np.ndarray:
    """Ear-clipping triangulation of a simple counter-clockwise polygon (N, 2)."""

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    remaining = list(range(len(points)))
    triangles = []
    while len(remaining) > 3:
        for j in range(len(remaining)):
            a, b, c = remaining[j - 1], remaining[j], remaining[(j + 1) % len(remaining)]
            pa, pb, pc = points[a], points[b], points[c]
            if cross(pa, pb, pc) <= 1e-12:
                continue  # reflex or collinear corner: not an ear
            if any(cross(pa, pb, points[k]) >= 0 and cross(pb, pc, points[k]) >= 0
                   and cross(pc, pa, points[k]) >= 0
                   for k in remaining if k not in (a, b, c)):
                continue
            triangles.append((a, b, c))
            remaining.pop(j)
            break
        else:
            raise ValueError("polygon is not simple or not counter-clockwise")
    triangles.append(tuple(remaining))
    return np.array(triangles, dtype=np.int64)


def _extrude(polygon: np.ndarray, z_bottom: np.ndarray | float, z_top: np.ndarray | float) -> Mesh:
    """Prism over a simple CCW polygon; per-vertex z arrays allow slanted caps."""
    polygon = np.asarray(polygon, dtype=np.float64)
    n = len(polygon)
    z_bottom = np.broadcast_to(np.asarray(z_bottom, dtype=np.float64), (n,))
    z_top = np.broadcast_to(np.asarray(z_top, dtype=np.float64), (n,))
    vertices = np.concatenate([np.column_stack([polygon, z_bottom]),
                               np.column_stack([polygon, z_top])])
    i, i1 = np.arange(n), np.roll(np.arange(n), -1)
    sides = np.concatenate([np.stack([i, i1, i1 + n], 1), np.stack([i, i1 + n, i + n], 1)])
    cap = _triangulate_polygon(polygon)
    faces = np.concatenate([sides, cap + n, cap[:, ::-1]])
    return _orient_outward(Mesh(vertices, faces))


def _box(size: Sequence[float], centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Mesh:
    sx, sy, sz = (0.5 * np.asarray(size, dtype=np.float64))
    rect = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]])
    mesh = _extrude(rect, -sz, sz)
    return Mesh(mesh.vertices + np.asarray(centre, dtype=np.float64), mesh.faces)


def _tube(path: np.ndarray, radius: float, plane_normal: np.ndarray, segments: int,
          aspect: float = 1.0) -> Mesh:
    """Sweep an ellipse along a planar path; open ends are capped at their centres."""
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    binormal = plane_normal / np.linalg.norm(plane_normal)
    normals = np.cross(tangents, binormal)
    cos_t, sin_t = _circle(segments)
    sections: list[np.ndarray] = [path[0]]
    for p, n in zip(path, normals, strict=True):
        sections.append(p + radius * (np.outer(cos_t, n) + aspect * np.outer(sin_t, binormal)))
    sections.append(path[-1])
    return _loft(sections)


def _swap_axes(mesh: Mesh, order: Sequence[int]) -> Mesh:
    """Permute coordinates; an odd permutation mirrors, so winding is re-checked."""
    return _orient_outward(Mesh(mesh.vertices[:, list(order)], mesh.faces))


# ------------------------------------------------------------------------------ families
# Each builder returns (mesh, parameters); parameters go into the OBJ header for provenance.

Built = tuple[Mesh, dict[str, float]]


def _arch(rng: np.random.Generator) -> Built:
    width, height = rng.uniform(1.6, 2.6), rng.uniform(1.0, 2.0)
    half_gap = width * rng.uniform(0.2, 0.35)
    leg_height = height * rng.uniform(0.1, 0.4)
    crown = min(half_gap * rng.uniform(0.6, 1.6), 0.85 * height - leg_height)
    depth = rng.uniform(0.3, 0.8)
    theta = np.linspace(np.pi, 0.0, 13)
    opening = np.column_stack([half_gap * np.cos(theta), leg_height + crown * np.sin(theta)])
    polygon = np.concatenate([
        [[-width / 2, 0.0], [-half_gap, 0.0]], opening,
        [[half_gap, 0.0], [width / 2, 0.0], [width / 2, height], [-width / 2, height]],
    ])
    # Extruded along z, then stood up so the arch opening faces sideways.
    mesh = _swap_axes(_extrude(polygon, 0.0, depth), (0, 2, 1))
    return mesh, {"width": width, "height": height, "gap": 2 * half_gap,
                  "leg_height": leg_height, "crown": crown, "depth": depth}


def _chair(rng: np.random.Generator) -> Built:
    seat_w, seat_d = rng.uniform(0.8, 1.3), rng.uniform(0.8, 1.2)
    seat_t, leg_h = rng.uniform(0.08, 0.16), rng.uniform(0.7, 1.2)
    leg_t, back_h = rng.uniform(0.07, 0.14), rng.uniform(0.6, 1.3)
    back_t = rng.uniform(0.06, 0.12)
    armrests = bool(rng.uniform() < 0.4)
    parts = [_box((seat_w, seat_d, seat_t), (0, 0, leg_h + seat_t / 2))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (seat_w - leg_t) / 2, sy * (seat_d - leg_t) / 2
            parts.append(_box((leg_t, leg_t, leg_h), (x, y, leg_h / 2)))
    parts.append(_box((seat_w, back_t, back_h),
                      (0, (seat_d - back_t) / 2, leg_h + seat_t + back_h / 2)))
    if armrests:
        arm_z = leg_h + seat_t + 0.35 * back_h
        for sx in (-1, 1):
            parts.append(_box((leg_t, seat_d, leg_t), (sx * (seat_w - leg_t) / 2, 0, arm_z)))
            parts.append(_box((leg_t, leg_t, arm_z - leg_h),
                              (sx * (seat_w - leg_t) / 2, -(seat_d - leg_t) / 2,
                               (arm_z + leg_h) / 2)))
    return _merge(parts), {"seat_width": seat_w, "seat_depth": seat_d, "leg_height": leg_h,
                           "leg_thickness": leg_t, "back_height": back_h,
                           "armrests": float(armrests)}


def _cone(rng: np.random.Generator) -> Built:
    radius, height = rng.uniform(0.5, 1.0), rng.uniform(0.8, 2.2)
    tip_offset = rng.uniform(0.2, 0.9) * radius  # oblique apex makes the pose visible
    ellipticity = rng.uniform(0.65, 1.0)
    cos_t, sin_t = _circle(24)
    base = np.column_stack([radius * cos_t, radius * ellipticity * sin_t, np.zeros(24)])
    mesh = _loft([np.zeros(3), base, np.array([tip_offset, 0.0, height])])
    return mesh, {"radius": radius, "height": height, "tip_offset": tip_offset,
                  "ellipticity": ellipticity}


def _cylinder(rng: np.random.Generator) -> Built:
    radius, height = rng.uniform(0.4, 1.0), rng.uniform(0.8, 2.5)
    slope = rng.uniform(0.25, 0.9)  # slanted cut on top makes the pose visible
    ellipticity = rng.uniform(0.7, 1.0)
    cos_t, sin_t = _circle(24)
    polygon = np.column_stack([radius * cos_t, radius * ellipticity * sin_t])
    mesh = _extrude(polygon, 0.0, height + slope * polygon[:, 0])
    return mesh, {"radius": radius, "height": height, "slope": slope,
                  "ellipticity": ellipticity}


def _dumbbell(rng: np.random.Generator) -> Built:
    bar_length, bar_radius = rng.uniform(1.2, 2.2), rng.uniform(0.07, 0.14)
    radii = rng.uniform(0.3, 0.6, size=2)
    radii[1] *= rng.uniform(0.55, 0.85)  # unequal ends tell the two ends apart
    widths = rng.uniform(0.15, 0.45, size=2)
    sides = int(rng.choice([5, 6, 8]))  # polygonal weights show the roll about the bar
    parts = [_revolve([(bar_radius, -bar_length / 2), (bar_radius, bar_length / 2)], 10)]
    for sign, radius, width in zip((-1, 1), radii, widths, strict=True):
        z0 = sign * bar_length / 2
        z1 = z0 - sign * width
        lo, hi = sorted((z0, z1))
        bevel = 0.15 * width
        parts.append(_revolve([(0.8 * radius, lo), (radius, lo + bevel),
                               (radius, hi - bevel), (0.8 * radius, hi)], sides))
    mesh = _swap_axes(_merge(parts), (2, 1, 0))
    return mesh, {"bar_length": bar_length, "bar_radius": bar_radius,
                  "radius_a": radii[0], "radius_b": radii[1], "sides": float(sides)}


def _egg(rng: np.random.Generator) -> Built:
    axes = np.sort(rng.uniform(0.5, 1.2, size=3))[::-1]
    pointedness = rng.uniform(0.1, 0.35)
    theta = np.linspace(0.0, np.pi, 13)
    z = -np.cos(theta)
    # Radius shrinks toward +z: an egg, so the two ends differ.
    r = np.sin(theta) * (1.0 - pointedness * z)
    profile = list(zip(r, z * axes[0], strict=True))
    profile[0], profile[-1] = (0.0, profile[0][1]), (0.0, profile[-1][1])
    mesh = _revolve(profile, 20, stretch=(axes[1], axes[2]))
    return _swap_axes(mesh, (2, 1, 0)), {"axis_a": axes[0], "axis_b": axes[1],
                                         "axis_c": axes[2], "pointedness": pointedness}


def _horseshoe(rng: np.random.Generator) -> Built:
    sweep = np.deg2rad(rng.uniform(200.0, 310.0))
    tube_radius = rng.uniform(0.15, 0.35)
    aspect = rng.uniform(0.6, 1.4)
    stretch = rng.uniform(1.0, 1.5)
    angles = np.linspace(-sweep / 2, sweep / 2, 24) + np.pi / 2
    path = np.column_stack([np.cos(angles), stretch * np.sin(angles), np.zeros_like(angles)])
    mesh = _tube(path, tube_radius, np.array([0.0, 0.0, 1.0]), 10, aspect=aspect)
    return mesh, {"sweep_deg": np.rad2deg(sweep), "tube_radius": tube_radius,
                  "aspect": aspect, "stretch": stretch}


def _lblock(rng: np.random.Generator) -> Built:
    long_arm, short_arm = rng.uniform(1.2, 2.0), rng.uniform(0.6, 1.4)
    thick_a, thick_b = rng.uniform(0.25, 0.55), rng.uniform(0.25, 0.55)
    depth = rng.uniform(0.3, 1.0)
    polygon = np.array([[0, 0], [long_arm, 0], [long_arm, thick_a], [thick_b, thick_a],
                        [thick_b, short_arm], [0, short_arm]], dtype=np.float64)
    return _extrude(polygon, 0.0, depth), {"long_arm": long_arm, "short_arm": short_arm,
                                           "thickness_a": thick_a, "thickness_b": thick_b,
                                           "depth": depth}


def _mug(rng: np.random.Generator) -> Built:
    radius, height = 1.0, rng.uniform(0.9, 2.0)
    wall, taper = rng.uniform(0.08, 0.16), rng.uniform(0.75, 1.0)
    # One closed profile: outer wall up, rim, inner wall down, inner floor: a hollow cup.
    profile = [(taper * radius, 0.0), (radius, height), (radius - wall, height),
               (taper * radius - wall, 1.5 * wall), (0.0, 1.5 * wall)]
    body = _revolve(profile, 24)
    handle_r = height * rng.uniform(0.25, 0.4)
    handle_t = rng.uniform(0.07, 0.13)
    angles = np.linspace(-np.pi / 2, np.pi / 2, 12)
    centre_z = height * rng.uniform(0.45, 0.6)
    # The handle's ends sink into the wall (x slightly less than the wall radius there).
    side_x = (taper + (1 - taper) * centre_z / height) * radius - handle_t
    path = np.column_stack([side_x + handle_r * np.cos(angles), np.zeros(12),
                            centre_z + handle_r * np.sin(angles)])
    handle = _tube(path, handle_t, np.array([0.0, 1.0, 0.0]), 8, aspect=1.6)
    return _merge([body, handle]), {"height": height, "wall": wall, "taper": taper,
                                    "handle_radius": handle_r, "handle_thickness": handle_t}


def _pyramid(rng: np.random.Generator) -> Built:
    sides = int(rng.integers(3, 7))
    radius, height = 1.0, rng.uniform(0.7, 2.0)
    angles = 2 * np.pi * (np.arange(sides) + rng.uniform(-0.15, 0.15, size=sides)) / sides
    radii = radius * rng.uniform(0.75, 1.0, size=sides)
    base = np.column_stack([radii * np.cos(angles), radii * np.sin(angles), np.zeros(sides)])
    apex = np.array([*rng.uniform(-0.35, 0.35, size=2), height])
    return _loft([np.zeros(3), base, apex]), {"sides": float(sides), "height": height,
                                              "apex_x": apex[0], "apex_y": apex[1]}


def _star(rng: np.random.Generator) -> Built:
    points = int(rng.integers(4, 9))
    inner = rng.uniform(0.35, 0.65)
    thickness = rng.uniform(0.2, 0.6)
    # Irregular tips break the n-fold symmetry so every rotation looks different.
    outer = rng.uniform(0.75, 1.0, size=points)
    outer[0] = 1.15
    angles = np.pi * np.arange(2 * points) / points
    radii = np.empty(2 * points)
    radii[0::2], radii[1::2] = outer, inner
    polygon = np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])
    return _extrude(polygon, 0.0, thickness), {"points": float(points), "inner": inner,
                                               "thickness": thickness}


def _table(rng: np.random.Generator) -> Built:
    round_top = bool(rng.uniform() < 0.3)
    top_w, top_d = rng.uniform(1.2, 2.2), rng.uniform(0.7, 1.2)
    top_t, leg_h = rng.uniform(0.06, 0.14), rng.uniform(0.6, 1.2)
    leg_t, inset = rng.uniform(0.07, 0.15), rng.uniform(0.0, 0.12)
    if round_top:
        cos_t, sin_t = _circle(20)
        ellipse = np.column_stack([top_w / 2 * cos_t, top_d / 2 * sin_t])
        parts = [_extrude(ellipse, leg_h, leg_h + top_t)]
        leg_x, leg_y = 0.3 * top_w, 0.3 * top_d
    else:
        parts = [_box((top_w, top_d, top_t), (0, 0, leg_h + top_t / 2))]
        leg_x, leg_y = top_w / 2 - leg_t / 2 - inset, top_d / 2 - leg_t / 2 - inset
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((leg_t, leg_t, leg_h), (sx * leg_x, sy * leg_y, leg_h / 2)))
    # A lower shelf on one long side only keeps the table from being front/back symmetric.
    shelf_z = leg_h * rng.uniform(0.2, 0.4)
    parts.append(_box((2 * leg_x, leg_t, leg_t), (0, leg_y, shelf_z)))
    return _merge(parts), {"round_top": float(round_top), "top_width": top_w,
                           "top_depth": top_d, "leg_height": leg_h, "leg_thickness": leg_t}


CATEGORY_BUILDERS: dict[str, Callable[[np.random.Generator], Built]] = {
    "arch": _arch, "chair": _chair, "cone": _cone, "cylinder": _cylinder,
    "dumbbell": _dumbbell, "egg": _egg, "horseshoe": _horseshoe, "lblock": _lblock,
    "mug": _mug, "pyramid": _pyramid, "star": _star, "table": _table,
}
CATEGORIES: tuple[str, ...] = tuple(sorted(CATEGORY_BUILDERS))


# ----------------------------------------------------------------------- normalise, write


def _instance_rng(category: str, instance: int) -> np.random.Generator:
    # crc32, not hash(): Python's str hash is salted per process.
    return np.random.default_rng([LIBRARY_SEED, zlib.crc32(category.encode()), instance])


def normalise(mesh: Mesh, radius: float = BOUNDING_RADIUS) -> Mesh:
    """Centre on the bounding-box centre and scale to the given bounding radius."""
    v = mesh.vertices - 0.5 * (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0))
    return Mesh(v * (radius / np.linalg.norm(v, axis=1).max()), mesh.faces)


def build_instance(category: str, instance: int) -> tuple[Mesh, dict[str, float]]:
    """Normalised mesh and shape parameters of one instance of a family."""
    if category not in CATEGORY_BUILDERS:
        raise ValueError(f"category={category!r}: expected one of {CATEGORIES}")
    mesh, params = CATEGORY_BUILDERS[category](_instance_rng(category, instance))
    return normalise(mesh), params


def corner_normals(mesh: Mesh, crease_degrees: float = CREASE_DEGREES) -> np.ndarray:
    """Per-corner normals (F, 3, 3): area-weighted over the faces around a vertex whose
    normal lies within the crease angle of the corner's own face."""
    v, f = mesh
    face_cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    face_unit = face_cross / np.maximum(np.linalg.norm(face_cross, axis=1, keepdims=True), 1e-30)
    incident: list[list[int]] = [[] for _ in range(len(v))]
    for face_index, face in enumerate(f):
        for vertex in face:
            incident[vertex].append(face_index)
    cos_crease = np.cos(np.deg2rad(crease_degrees))
    normals = np.empty((len(f), 3, 3))
    for face_index, face in enumerate(f):
        for corner, vertex in enumerate(face):
            around = np.asarray(incident[vertex])
            keep = around[face_unit[around] @ face_unit[face_index] >= cos_crease]
            n = face_cross[keep].sum(axis=0)
            length = np.linalg.norm(n)
            normals[face_index, corner] = n / length if length > 0 else face_unit[face_index]
    return normals


def obj_text(mesh: Mesh, name: str, params: dict[str, float]) -> str:
    """OBJ file text with positions, crease-aware vertex normals and 1-based faces."""
    normals = np.round(corner_normals(mesh).reshape(-1, 3), 4) + 0.0  # +0.0 drops "-0"
    unique_normals, normal_index = np.unique(normals, axis=0, return_inverse=True)
    normal_index = normal_index.reshape(-1, 3) + 1
    # The header names this script's former path: kept so the committed meshes stay
    # byte-identical (the regeneration test compares them byte for byte).
    lines = [f"# {name}: generated by envs/procedural_meshes.py (do not edit)",
             "# " + " ".join(f"{k}={v:.4f}" for k, v in params.items()), f"o {name}"]
    lines += [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in mesh.vertices + 0.0]
    lines += [f"vn {x:.4f} {y:.4f} {z:.4f}" for x, y, z in unique_normals]
    lines += [f"f {a}//{na} {b}//{nb} {c}//{nc}"
              for (a, b, c), (na, nb, nc) in zip(mesh.faces + 1, normal_index, strict=True)]
    return "\n".join(lines) + "\n"


def write_meshes(out_dir: Path, categories: Sequence[str] = CATEGORIES) -> list[Path]:
    """Write ``<out_dir>/meshes/<category>/<category>_<k>.obj`` for every instance."""
    written = []
    for category in categories:
        folder = Path(out_dir) / "meshes" / category
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(INSTANCES_PER_CATEGORY):
            mesh, params = build_instance(category, k)
            path = folder / f"{category}_{k}.obj"
            path.write_text(obj_text(mesh, f"{category}_{k}", params))
            written.append(path)
    return written


# ------------------------------------------------------------------------------ catalogue


def _distinct_colours(count: int, rng: np.random.Generator) -> list[tuple[float, ...]]:
    # Golden-ratio hue steps spread hues evenly; the shuffle decouples colour from category.
    hues = (rng.uniform() + 0.6180339887 * np.arange(count)) % 1.0
    hues = hues[rng.permutation(count)]
    sats, vals = rng.uniform(0.6, 0.95, count), rng.uniform(0.7, 0.95, count)
    return [(*colorsys.hsv_to_rgb(h, s, v), 1.0) for h, s, v in zip(hues, sats, vals, strict=True)]


def _rgba_text(rgba: Sequence[float]) -> str:
    return " ".join(f"{c:.3f}" for c in rgba)


def _urdf_rgba(urdf: Path) -> tuple[float, ...] | None:
    match = re.search(r'rgba="([^"]+)"', urdf.read_text()) if urdf.is_file() else None
    return tuple(float(c) for c in match.group(1).split()) if match else None


def catalogue_rows(categories: Sequence[str] = CATEGORIES,
                   pybullet_data_dir: Path | None = None) -> list[dict[str, str]]:
    """Rows of ``objects.csv``: the procedural library, then pybullet_data extras (when a
    pybullet_data folder is given; random_urdfs colours come from their URDFs)."""
    rng = np.random.default_rng([LIBRARY_SEED, 1])
    # Named extras always take part in the draw so the library's colours do not depend on
    # whether pybullet_data is listed.
    colours = _distinct_colours(
        len(categories) * INSTANCES_PER_CATEGORY + len(PYBULLET_NAMED_MESHES), rng)
    rows = []
    for category in categories:
        # Per-category permutation: split by object, the same count of test objects each.
        split_rng = np.random.default_rng([LIBRARY_SEED, zlib.crc32(category.encode()), 99])
        test = set(split_rng.permutation(INSTANCES_PER_CATEGORY)[:TEST_INSTANCES_PER_CATEGORY])
        for k in range(INSTANCES_PER_CATEGORY):
            rows.append({"object_id": f"{category}_{k}", "category": category,
                         "mesh": f"meshes/{category}/{category}_{k}.obj", "scale": "1.0",
                         "split": "test" if k in test else "train",
                         "rgba": _rgba_text(colours[len(rows)])})
    if pybullet_data_dir is None:
        return rows
    for object_id, mesh in PYBULLET_NAMED_MESHES:
        rows.append({"object_id": object_id, "category": "", "mesh": f"pybullet_data:{mesh}",
                     "scale": "1.0", "split": "extra", "rgba": _rgba_text(colours[len(rows)])})
    for n in range(RANDOM_URDF_COUNT):
        stem = f"random_urdfs/{n:03d}/{n:03d}"
        rgba = _urdf_rgba(pybullet_data_dir / f"{stem}.urdf")
        if rgba is None:
            rgba = (*colorsys.hsv_to_rgb(rng.uniform(), 0.8, 0.85), 1.0)
        rows.append({"object_id": f"random_urdf_{n:03d}", "category": "",
                     "mesh": f"pybullet_data:{stem}.obj", "scale": "1.0", "split": "extra",
                     "rgba": _rgba_text(rgba)})
    return rows


def write_catalogue(out_dir: Path, rows: Sequence[dict[str, str]]) -> Path:
    path = Path(out_dir) / "objects.csv"
    lines = [",".join(CATALOG_COLUMNS)]
    lines += [",".join(row[c] for c in CATALOG_COLUMNS) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    default_out = Path(__file__).resolve().parent.parent / "assets"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=default_out,
                        help="folder receiving meshes/ and objects.csv (default: assets/)")
    parser.add_argument("--categories", nargs="*", default=list(CATEGORIES),
                        help="families to write (default: all)")
    parser.add_argument("--no-pybullet-data", action="store_true",
                        help="leave pybullet_data extras out of objects.csv")
    args = parser.parse_args(argv)
    pybullet_data_dir = None
    if not args.no_pybullet_data:
        import pybullet_data  # only needed to read the random_urdfs colours

        pybullet_data_dir = Path(pybullet_data.getDataPath())
    meshes = write_meshes(args.out_dir, args.categories)
    catalogue = write_catalogue(args.out_dir, catalogue_rows(args.categories, pybullet_data_dir))
    print(f"wrote {len(meshes)} meshes under {args.out_dir / 'meshes'} and {catalogue}")


if __name__ == "__main__":
    main()
