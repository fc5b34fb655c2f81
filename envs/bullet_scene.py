"""A pybullet scene of one object on a floor, rendered from a camera on a sphere.

This module owns everything that talks to pybullet for the object-view world: the client,
the renderer choice (TinyRenderer or EGL), the patterned floor, the textures that make an
object's pose visible, a cache of mesh visual shapes so that switching objects never
reloads a file, and turning a latent state vector into an image. It knows nothing about
Gymnasium or learning.

What makes every action visible: the floor carries a fixed pattern (rectangular tiles and a
dark band along +x), so a camera move shifts the world while an object or light move does
not; every object wears a grey-level cell texture projected along its own axes, so a turn
about any axis changes the image even for a symmetric shape; the light casts shadows. Colour
is a nuisance: the floor and object are tinted by hues from the state, so a texture is
grey-level and shared in kind by every object and category.
"""

from __future__ import annotations

import colorsys
import functools
import math
import pkgutil
import shutil
import tempfile
import warnings
import weakref
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pybullet as pb

from envs.catalog import CatalogEntry, load_obj_vertices
from envs.scene_state import QUAT, STATE_INDEX

FIELD_OF_VIEW_DEG = 45.0
NEAR, FAR = 0.05, 10.0
FLOOR_Z = -0.52  # just below the bounding sphere (radius 0.5) so no orientation intersects it
FLOOR_HALF_EXTENT = 6.0
RENDERERS = ("tiny", "egl")
#: Floor tiles (scene units along x, y): not square, so the pattern has no 90 deg symmetry;
#: the band along +x breaks the remaining 180 deg one, so the floor fixes the world frame.
FLOOR_TILE = (0.36, 0.24)
FLOOR_BAND_WIDTH = 0.16
FLOOR_TEXELS_PER_UNIT = 64
#: Object texture: a grid of cells over the object's bounding cube, projected along the
#: axis its face looks down (so a turn about any axis moves the pattern).
OBJECT_TEXTURE_CELLS = 5
OBJECT_TEXTURE_LEVELS = (0.2, 0.5, 0.75, 1.0)
OBJECT_TEXTURE_SIZE = 80
#: TinyRenderer's shading mix: less ambient than its default so the light shows.
LIGHT_AMBIENT, LIGHT_DIFFUSE, LIGHT_SPECULAR = 0.25, 0.7, 0.05


@dataclass(frozen=True)
class RenderedView:
    """One rendered frame: rgb uint8 (H, W, 3); depth float32 (H, W) in scene units and
    the object mask bool (H, W), each None when not requested."""

    rgb: np.ndarray
    depth: np.ndarray | None
    mask: np.ndarray | None


@functools.lru_cache(maxsize=4096)
def mesh_normalisation(mesh_path: Path) -> tuple[tuple[float, float, float], float]:
    """Bounding-box centre and bounding radius about that centre of an OBJ mesh."""
    vertices = load_obj_vertices(mesh_path)
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    if not math.isfinite(radius) or radius <= 0.0:
        raise ValueError(f"mesh {mesh_path}: degenerate geometry (bounding radius {radius})")
    return (float(centre[0]), float(centre[1]), float(centre[2])), radius


def floor_rgba(hue: float) -> list[float]:
    """Tint of the (grey-level) floor texture."""
    r, g, b = colorsys.hsv_to_rgb(float(hue) % 1.0, 0.55, 0.9)
    return [r, g, b, 1.0]


def object_rgba(hue: float) -> list[float]:
    """Tint of an object's (grey-level) texture."""
    r, g, b = colorsys.hsv_to_rgb(float(hue) % 1.0, 0.6, 1.0)
    return [r, g, b, 1.0]


def floor_texture() -> np.ndarray:
    """The floor pattern (uint8 RGB, grey levels): rectangular tiles of two greys and a
    dark band from the origin along +x; texel (row, col) covers world (x, y) with x along
    columns and y along rows."""
    side = int(2 * FLOOR_HALF_EXTENT * FLOOR_TEXELS_PER_UNIT)
    coords = (np.arange(side) + 0.5) / FLOOR_TEXELS_PER_UNIT - FLOOR_HALF_EXTENT
    x, y = coords[None, :], coords[:, None]
    checker = (np.floor(x / FLOOR_TILE[0]) + np.floor(y / FLOOR_TILE[1])) % 2
    grey = np.where(checker > 0, 0.62, 0.92)
    band = (x > 0.0) & (np.abs(y) < FLOOR_BAND_WIDTH / 2)
    grey = np.where(band, 0.18, grey)
    return np.repeat((255 * grey).astype(np.uint8)[:, :, None], 3, axis=2)


def object_texture(object_id: str) -> np.ndarray:
    """An object's cell pattern (uint8 RGB, grey levels), fixed by its id: a grid of
    ``OBJECT_TEXTURE_CELLS`` square cells, neighbours always of different levels."""
    rng = np.random.default_rng(zlib.crc32(object_id.encode()))
    n = OBJECT_TEXTURE_CELLS
    levels = np.empty((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            taken = {levels[i - 1, j]} if i else set()
            taken |= {levels[i, j - 1]} if j else set()
            choices = [k for k in range(len(OBJECT_TEXTURE_LEVELS)) if k not in taken]
            levels[i, j] = choices[int(rng.integers(len(choices)))]
    grey = np.asarray(OBJECT_TEXTURE_LEVELS)[levels]
    cell = OBJECT_TEXTURE_SIZE // n
    grey = np.kron(grey, np.ones((cell, cell)))
    return np.repeat((255 * grey).astype(np.uint8)[:, :, None], 3, axis=2)


def textured_obj_text(mesh_path: Path) -> str:
    """OBJ text of ``mesh_path`` with texture coordinates for the object's cell pattern.

    Each triangle gets the coordinates of its corners projected along the axis its
    geometric normal points down most (box projection), measured in the mesh's bounding
    cube, so the pattern is fixed on the object. Positions and normals are kept as they
    are; polygons are split into fans.
    """
    positions: list[str] = []
    normals: list[str] = []
    faces: list[list[tuple[int, int | None]]] = []
    with Path(mesh_path).open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                positions.append(" ".join(parts[1:4]))
            elif parts[0] == "vn":
                normals.append(" ".join(parts[1:4]))
            elif parts[0] == "f":
                corners = []
                for corner in parts[1:]:
                    fields = corner.split("/")
                    v = int(fields[0])
                    n = int(fields[2]) if len(fields) > 2 and fields[2] else None
                    v = v - 1 if v > 0 else len(positions) + v
                    if n is not None:
                        n = n - 1 if n > 0 else len(normals) + n
                    corners.append((v, n))
                faces.extend([corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1))
    vertices = np.array([p.split() for p in positions], dtype=np.float64)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    unit = (vertices - low) / max(float((high - low).max()), 1e-9)  # bounding cube -> [0, 1]
    triangles = np.array([[c[0] for c in f] for f in faces], dtype=np.int64)
    corners_xyz = vertices[triangles]  # (F, 3, 3)
    normal = np.cross(corners_xyz[:, 1] - corners_xyz[:, 0], corners_xyz[:, 2] - corners_xyz[:, 0])
    axis = np.abs(normal).argmax(axis=1)  # (F,)
    planes = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # the two coordinates kept
    uv = np.take_along_axis(unit[triangles], planes[:, None, :], axis=2)  # (F, 3, 2)
    lines = [f"v {p}" for p in positions] + [f"vn {n}" for n in normals]
    lines += [f"vt {u:.4f} {v:.4f}" for u, v in uv.reshape(-1, 2)]
    for f, face in enumerate(faces):
        corner_text = []
        for c, (v, n) in enumerate(face):
            t = 3 * f + c + 1
            corner_text.append(f"{v + 1}/{t}/{n + 1}" if n is not None else f"{v + 1}/{t}")
        lines.append("f " + " ".join(corner_text))
    return "\n".join(lines) + "\n"


def camera_eye(azimuth: float, elevation: float, distance: float) -> list[float]:
    ce = math.cos(elevation)
    return [distance * ce * math.cos(azimuth), distance * ce * math.sin(azimuth), distance * math.sin(elevation)]


class BulletScene:
    """Owns one pybullet DIRECT client with a floor and at most one object body at a time.

    Visual shapes are created once per catalogue entry and reused; switching objects
    removes the old multibody and creates a new one from the cached shape, which does not
    grow memory (see tests/test_soak.py), unlike repeated loadURDF.
    """

    def __init__(self, renderer: str = "tiny", shadows: bool = True) -> None:
        if renderer not in RENDERERS:
            raise ValueError(f"renderer={renderer!r}: expected one of {RENDERERS}")
        self.client = pb.connect(pb.DIRECT)
        self.shadows = shadows
        self.renderer = self._start_renderer(renderer)
        # Textures and texture-mapped meshes are files pybullet reads once; they live here,
        # removed at close() or, for a scene never closed, when it is collected or the
        # interpreter exits (weakref.finalize: quietly, where TemporaryDirectory warns).
        self._files = Path(tempfile.mkdtemp(prefix="ciper_scene_"))
        self._remove_files = weakref.finalize(self, shutil.rmtree, self._files, ignore_errors=True)
        self._shape_cache: dict[str, tuple[int, int]] = {}  # object_id -> (shape, texture)
        self._body: int | None = None
        self._object_key: str | None = None
        self._object_texture = -1
        self._floor_hue: float | None = None
        self._object_hue: float | None = None
        floor_mesh = self._files / "floor.obj"
        e = FLOOR_HALF_EXTENT
        floor_mesh.write_text(
            f"v {-e} {-e} 0\nv {e} {-e} 0\nv {e} {e} 0\nv {-e} {e} 0\n"
            "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvn 0 0 1\nf 1/1/1 2/2/1 3/3/1\nf 1/1/1 3/3/1 4/4/1\n"
        )
        floor_shape = pb.createVisualShape(
            pb.GEOM_MESH, fileName=str(floor_mesh), rgbaColor=floor_rgba(0.0), physicsClientId=self.client
        )
        self._floor = pb.createMultiBody(
            baseVisualShapeIndex=floor_shape, basePosition=[0.0, 0.0, FLOOR_Z], physicsClientId=self.client
        )
        # Texture rows run from v = 1 at the top of the image: flip so row 0 is y = -e.
        texture = self._write_texture("floor.png", floor_texture()[::-1])
        pb.changeVisualShape(self._floor, -1, textureUniqueId=texture, physicsClientId=self.client)
        self._projection = pb.computeProjectionMatrixFOV(FIELD_OF_VIEW_DEG, 1.0, NEAR, FAR)

    def _write_texture(self, name: str, rgb: np.ndarray) -> int:
        path = self._files / name
        cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
        texture = pb.loadTexture(str(path), physicsClientId=self.client)
        if texture < 0:
            raise RuntimeError(f"pybullet could not load the texture {path}")
        return texture

    def _start_renderer(self, renderer: str) -> str:
        if renderer == "tiny":
            return "tiny"
        loader = pkgutil.get_loader("eglRenderer")
        plugin = -1
        if loader is not None:
            plugin = pb.loadPlugin(loader.get_filename(), "_eglRendererPlugin", physicsClientId=self.client)
        if plugin < 0:
            warnings.warn(
                "renderer='egl' requested but the pybullet EGL plugin could not be loaded "
                "(no EGL driver or GPU?): falling back to renderer='tiny' (TinyRenderer, CPU)",
                RuntimeWarning,
                stacklevel=3,
            )
            return "tiny"
        return "egl"

    # ------------------------------------------------------------------ objects

    def _visual_shape(self, entry: CatalogEntry) -> tuple[int, int]:
        key = entry.object_id
        if key not in self._shape_cache:
            centre, radius = mesh_normalisation(entry.mesh_path)
            scale = 0.5 * entry.scale / radius
            index = len(self._shape_cache)
            mesh = self._files / f"object_{index}.obj"
            mesh.write_text(textured_obj_text(entry.mesh_path))
            shape = pb.createVisualShape(
                pb.GEOM_MESH,
                fileName=str(mesh),
                meshScale=[scale] * 3,
                visualFramePosition=[-c * scale for c in centre],
                physicsClientId=self.client,
            )
            if shape < 0:
                raise ValueError(f"object {entry.object_id!r}: pybullet could not load mesh {entry.mesh_path}")
            texture = self._write_texture(f"object_{index}.png", object_texture(entry.object_id))
            self._shape_cache[key] = (shape, texture)
        return self._shape_cache[key]

    def show_object(self, entry: CatalogEntry) -> None:
        """Make ``entry`` the one object in the scene (no-op if it already is)."""
        if self._object_key == entry.object_id:
            return
        shape, texture = self._visual_shape(entry)
        if self._body is not None:
            pb.removeBody(self._body, physicsClientId=self.client)
        self._body = pb.createMultiBody(baseVisualShapeIndex=shape, physicsClientId=self.client)
        pb.changeVisualShape(self._body, -1, textureUniqueId=texture, physicsClientId=self.client)
        self._object_key = entry.object_id
        self._object_hue = None  # the new body has its default colour

    @property
    def object_body(self) -> int | None:
        return self._body

    # ------------------------------------------------------------------ rendering

    def render(self, state: np.ndarray, size: int, depth: bool = False, mask: bool = False) -> RenderedView:
        """Render ``state`` at ``size`` x ``size`` pixels."""
        if self._body is None:
            raise RuntimeError("render() before show_object(): no object in the scene")
        quat = state[QUAT]
        pb.resetBasePositionAndOrientation(self._body, [0.0, 0.0, 0.0], quat.tolist(), physicsClientId=self.client)
        hue = float(state[STATE_INDEX["floor_hue"]])
        if hue != self._floor_hue:
            pb.changeVisualShape(self._floor, -1, rgbaColor=floor_rgba(hue), physicsClientId=self.client)
            self._floor_hue = hue
        hue = float(state[STATE_INDEX["object_hue"]])
        if hue != self._object_hue:
            pb.changeVisualShape(self._body, -1, rgbaColor=object_rgba(hue), physicsClientId=self.client)
            self._object_hue = hue
        eye = camera_eye(state[0], state[1], state[2])
        view = pb.computeViewMatrix(eye, [0.0, 0.0, 0.0], [0.0, 0.0, 1.0])
        light_az, light_el = state[STATE_INDEX["light_azimuth"]], state[STATE_INDEX["light_elevation"]]
        light_dir = camera_eye(light_az, light_el, 1.0)
        flags = 0 if mask else pb.ER_NO_SEGMENTATION_MASK
        _, _, rgba, zbuffer, seg = pb.getCameraImage(
            size,
            size,
            viewMatrix=view,
            projectionMatrix=self._projection,
            lightDirection=light_dir,
            lightColor=state[9:12].tolist(),
            lightAmbientCoeff=LIGHT_AMBIENT,
            lightDiffuseCoeff=LIGHT_DIFFUSE,
            lightSpecularCoeff=LIGHT_SPECULAR,
            shadow=int(self.shadows),
            renderer=pb.ER_BULLET_HARDWARE_OPENGL if self.renderer == "egl" else pb.ER_TINY_RENDERER,
            flags=flags,
            physicsClientId=self.client,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[:, :, :3].copy()
        depth_m = None
        if depth:
            z = np.asarray(zbuffer, dtype=np.float32).reshape(size, size)
            depth_m = (FAR * NEAR / (FAR - (FAR - NEAR) * z)).astype(np.float32)
        object_mask = None
        if mask:
            object_mask = (np.asarray(seg).reshape(size, size) & ((1 << 24) - 1)) == self._body
        return RenderedView(rgb=rgb, depth=depth_m, mask=object_mask)

    def close(self) -> None:
        if self.client is not None and self.client >= 0:
            try:
                pb.disconnect(physicsClientId=self.client)
            except pb.error:
                pass
            self.client = -1
        if getattr(self, "_remove_files", None) is not None:
            self._remove_files()
