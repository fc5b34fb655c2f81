"""A pybullet scene of one object on a floor, rendered from a camera on a sphere.

This module owns everything that talks to pybullet for the object-view world: the client,
the renderer choice (TinyRenderer or EGL), the floor, a cache of mesh visual shapes so that
switching objects never reloads a file, and turning a latent state vector into an image.
It knows nothing about Gymnasium or learning.
"""

from __future__ import annotations

import colorsys
import functools
import math
import pkgutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet as pb

from envs.catalog import CatalogEntry, load_obj_vertices
from envs.scene_state import QUAT, STATE_INDEX

FIELD_OF_VIEW_DEG = 45.0
NEAR, FAR = 0.05, 10.0
FLOOR_Z = -0.52  # just below the bounding sphere (radius 0.5) so no orientation intersects it
FLOOR_HALF_EXTENT = 6.0
RENDERERS = ("tiny", "egl")


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
    r, g, b = colorsys.hsv_to_rgb(float(hue) % 1.0, 0.55, 0.75)
    return [r, g, b, 1.0]


def camera_eye(azimuth: float, elevation: float, distance: float) -> list[float]:
    ce = math.cos(elevation)
    return [distance * ce * math.cos(azimuth), distance * ce * math.sin(azimuth), distance * math.sin(elevation)]


class BulletScene:
    """Owns one pybullet DIRECT client with a floor and at most one object body at a time.

    Visual shapes are created once per catalogue entry and reused; switching objects
    removes the old multibody and creates a new one from the cached shape, which does not
    grow memory (see tests/test_soak.py), unlike repeated loadURDF.
    """

    def __init__(self, renderer: str = "tiny", shadows: bool = False) -> None:
        if renderer not in RENDERERS:
            raise ValueError(f"renderer={renderer!r}: expected one of {RENDERERS}")
        self.client = pb.connect(pb.DIRECT)
        self.shadows = shadows
        self.renderer = self._start_renderer(renderer)
        self._shape_cache: dict[str, int] = {}
        self._body: int | None = None
        self._object_key: str | None = None
        self._floor_hue: float | None = None
        floor_shape = pb.createVisualShape(
            pb.GEOM_BOX,
            halfExtents=[FLOOR_HALF_EXTENT, FLOOR_HALF_EXTENT, 0.01],
            rgbaColor=floor_rgba(0.0),
            physicsClientId=self.client,
        )
        self._floor = pb.createMultiBody(
            baseVisualShapeIndex=floor_shape,
            basePosition=[0.0, 0.0, FLOOR_Z - 0.01],
            physicsClientId=self.client,
        )
        self._projection = pb.computeProjectionMatrixFOV(FIELD_OF_VIEW_DEG, 1.0, NEAR, FAR)

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

    def _visual_shape(self, entry: CatalogEntry) -> int:
        key = entry.object_id
        if key not in self._shape_cache:
            centre, radius = mesh_normalisation(entry.mesh_path)
            scale = 0.5 * entry.scale / radius
            shape = pb.createVisualShape(
                pb.GEOM_MESH,
                fileName=str(entry.mesh_path),
                meshScale=[scale] * 3,
                visualFramePosition=[-c * scale for c in centre],
                rgbaColor=list(entry.rgba),
                physicsClientId=self.client,
            )
            if shape < 0:
                raise ValueError(f"object {entry.object_id!r}: pybullet could not load mesh {entry.mesh_path}")
            self._shape_cache[key] = shape
        return self._shape_cache[key]

    def show_object(self, entry: CatalogEntry) -> None:
        """Make ``entry`` the one object in the scene (no-op if it already is)."""
        if self._object_key == entry.object_id:
            return
        shape = self._visual_shape(entry)
        if self._body is not None:
            pb.removeBody(self._body, physicsClientId=self.client)
        self._body = pb.createMultiBody(baseVisualShapeIndex=shape, physicsClientId=self.client)
        self._object_key = entry.object_id

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
