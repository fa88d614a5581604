"""A deterministic synthetic night street, seen by a thermal and an RGB camera.

``ivfusion demo`` has to run on a bare install: no data set, no weights, no network. This module renders
the input it needs: a short sequence of a dark street with pedestrians that the RGB camera can hardly see
(dark clothes, no light, sensor noise) but the thermal camera shows plainly, and an oncoming car whose
headlights blind the RGB camera while being unremarkable in thermal. That is the situation the fusion is
built for, so the demo shows its point, and the tests get a scene with known ground truth.

How it is rendered
    A pinhole camera (the RGB camera) looks along a street: a ground plane with road, curb and
    sidewalks, two rows of building facades with windows, sky. Every pixel of that static background is
    ray-cast once per scene (vectorised, 2x supersampled) into three layers: temperature in kelvin, RGB
    albedo and RGB illumination. Each frame then adds the moving objects (pedestrians with a walking
    cycle, a car that creeps forward) drawn as anti-aliased part masks, the headlight glare as a lens
    effect, and the sensor models. Both modalities are rendered in the RGB camera's pixel grid; the thermal
    image is then resampled into the thermal camera's own grid with the homography ``H`` (thermal pixel
    -> RGB pixel), exactly the relation the registration stage of the pipeline has to undo.

Units
    ``SceneFrame.thermal`` is radiometric like a FLIR Boson/Lepton in TLinear mode: ``uint16`` in
    centi-kelvin (value = T[K] * 100). ``SceneFrame.rgb`` is display-referred ``uint8`` RGB after a gamma
    of 1/2.2. Geometry is in metres: X to the right, Y up, Z forward from the RGB camera.

Everything derives from ``seed`` (layout, clothing, noise); the same seed gives bit-identical frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ivfusion_ros.detect.base import Detections
from ivfusion_ros.errors import ConfigError

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_H",
    "DEFAULT_H_TUPLE",
    "NightStreetScene",
    "SceneFrame",
]

#: Class table of the scene's ground truth (``SceneFrame.class_ids`` index into it).
CLASS_NAMES: tuple[str, ...] = ("person", "car")
_PERSON, _CAR = 0, 1

#: Row-major thermal -> RGB homography of the demo rig, in pixels of the 640x512 default frame: the
#: thermal camera is rotated by 1.5 deg, sees 0.96 of the RGB scale and is shifted by (+15, -10) px,
#: all about the image centre (320, 256), plus a tiny projective term. Derivation:
#: ``H = T(c + t) @ (0.96 * R(1.5 deg)) @ T(-c)`` with ``c = (320, 256)``, ``t = (15, -10)``.
DEFAULT_H_TUPLE: tuple[float, ...] = (
    0.959671, -0.025130, 34.338517,
    0.025130, 0.959671, -7.717343,
    1.5e-06, -1.0e-06, 1.0,
)
#: :data:`DEFAULT_H_TUPLE` as a ``(3, 3)`` float64 array (a read-only view; copy it to modify).
DEFAULT_H: np.ndarray = np.array(DEFAULT_H_TUPLE, dtype=np.float64).reshape(3, 3)
DEFAULT_H.setflags(write=False)

# --- camera and street geometry (metres) -------------------------------------------------------------
_FOCAL_PER_WIDTH = 0.875  # f = 0.875 * W: a 59 deg horizontal field of view, like a dash/robot camera
_HORIZON = 0.48  # principal point row as a fraction of the height (camera pitched a little down)
_CAM_HEIGHT = 1.3
_ROAD_LEFT, _ROAD_RIGHT = -5.3, 1.9  # camera drives on the right lane of a two-lane road
_CENTRE_LINE = -1.7
_FACADE_LEFT, _FACADE_RIGHT = -8.8, 5.2
_FAR_Z = 220.0  # where the street ends (ground and facades are cut there; sky beyond)
_LAMP = (2.35, 4.6, 9.5)  # lamp head (X, Y, Z); the pole stands on the right sidewalk
_LAMP_POLE_X = 2.9
_SUPERSAMPLE = 2  # static background; moving objects use 4x

# --- radiometry ------------------------------------------------------------------------------------
_AMBIENT = np.array([0.009, 0.0088, 0.0105], np.float32)  # city sky glow on horizontal surfaces
_LAMP_RGB = np.array([1.0, 0.74, 0.44], np.float32)  # warm sodium-like street lamp
_LAMP_POWER = 9.0
_HEADLIGHT_RGB = np.array([0.92, 0.96, 1.0], np.float32)  # cool LED headlights
_BEAM_POWER = 100.0  # low-beam intensity on the axis
_READ_NOISE = 0.004  # RGB dark/read noise, linear full-scale units
_SHOT_NOISE = 0.0006  # shot-noise variance per unit of linear signal
_THERMAL_NOISE_CK = 5.0  # temporal noise, centi-kelvin (NETD ~50 mK)


@dataclass(frozen=True)
class SceneFrame:
    """One time step of the scene in both modalities, with ground truth.

    Attributes:
        index: frame number, ``0 <= index < len(scene)``.
        stamp: capture time in seconds (``index / fps``); both cameras are exposed together.
        thermal: ``(H, W)`` uint16, temperature in centi-kelvin (T[K] * 100), in the thermal camera's
            own pixel grid (``thermal(p) = scene(H p)``).
        rgb: ``(H, W, 3)`` uint8 RGB in the RGB camera's pixel grid.
        boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in RGB pixels: the tight extent of each object's
            silhouette (clipped to the image).
        class_ids: ``(N,)`` int64 indices into ``class_names``.
        class_names: :data:`CLASS_NAMES`.
        visible_in_rgb: ``(N,)`` bool: whether the object stands out from what is behind it in the RGB
            image (noise-free mean display-luma difference over its silhouette of at least 5 % of full
            scale, glare included). Dark pedestrians are False, the one at the lamp mostly True; the
            small distant car is False because its own glare swamps it.
        light_sources: ``(K, 2)`` float32 ``x, y`` RGB pixel positions of the headlights (the glare
            sources), for checking glare handling.

    Objects are sorted by ``x1`` (left to right).
    """

    index: int
    stamp: float
    thermal: np.ndarray
    rgb: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES
    visible_in_rgb: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    light_sources: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def gt_detections(self) -> Detections:
        """The ground truth as :class:`Detections` (score 1), e.g. for drawing or evaluation."""
        return Detections(
            self.boxes.copy(), np.ones((len(self.boxes),), np.float32), self.class_ids.copy(),
            self.class_names,
        )


@dataclass(frozen=True)
class _Walker:
    """A pedestrian walking (and turning back at the ends) along a straight path on the ground."""

    start: tuple[float, float]  # (X, Z) metres
    end: tuple[float, float]
    speed: float  # m/s
    height: float  # m
    phase0: float  # walking-cycle phase at t = 0, radians
    temps: tuple[float, float, float, float, float]  # K: jacket, trousers, skin, hair, shoes
    albedo: np.ndarray  # (5, 3) float32 RGB albedo of the same parts

    def pose(self, t: float) -> tuple[float, float, float, float]:
        """``(X, Z, facing psi, gait phase)`` at time ``t`` (back and forth along the path).

        ``psi`` is the walking direction: 0 towards the camera, pi away from it, +pi/2 to the right.
        """
        (x0, z0), (x1, z1) = self.start, self.end
        length = max(math.hypot(x1 - x0, z1 - z0), 1e-6)
        s = (self.speed * t) % (2.0 * length)
        dx, dz = (x1 - x0) / length, (z1 - z0) / length
        if s > length:  # on the way back
            s, dx, dz = 2.0 * length - s, -dx, -dz
        frac = s / length
        x, z = x0 + (x1 - x0) * frac, z0 + (z1 - z0) * frac
        psi = math.atan2(dx, -dz)
        phase = self.phase0 + 2.0 * math.pi * self.speed * t / 1.35  # one gait cycle per 1.35 m
        return x, z, psi, phase


@dataclass(frozen=True)
class _Car:
    """The oncoming car: creeps from ``z_start`` to ``z_stop`` and waits there (e.g. to turn)."""

    x: float
    z_start: float
    z_stop: float
    speed: float
    albedo: np.ndarray  # (3,) body paint


#: What drawing one object returns: (class id, GT box in RGB pixels or None when out of view, canvas
#: slices, alpha there, linear radiance there before the object was drawn).
_Drawn = tuple[int, "np.ndarray | None", tuple[slice, slice], np.ndarray, np.ndarray]


def _as_homography(h: np.ndarray | Sequence[float]) -> np.ndarray:
    """Validate a 3x3 / 9-number homography and return it as float64 (3, 3) with ``h[2, 2] == 1``."""
    try:
        arr = np.asarray(h, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"homography: expected 9 numbers or a 3x3 array, got {h!r}") from None
    if arr.size != 9:
        raise ConfigError(f"homography: expected 9 numbers (row-major 3x3), got {arr.size}")
    arr = arr.reshape(3, 3)
    if not np.all(np.isfinite(arr)):
        raise ConfigError("homography: contains non-finite values")
    if abs(np.linalg.det(arr)) < 1e-12 or abs(arr[2, 2]) < 1e-12:
        raise ConfigError("homography: the matrix is singular or has h33 == 0")
    return arr / arr[2, 2]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent, reproducible generator per (seed, stream): frames do not depend on call order."""
    return np.random.default_rng([seed, *stream])


class NightStreetScene:
    """A seeded synthetic night street sequence in thermal + RGB, with ground truth.

    Args:
        width, height: size of both images in pixels (the geometry scales with the width; the
            pedestrians are 140-220 px tall at the default 640x512).
        num_frames: length of the sequence (pedestrians walk back and forth along their paths, so
            longer sequences stay populated).
        fps: frame rate; frame ``i`` is stamped ``i / fps`` seconds.
        seed: everything random (layout jitter, clothing, lit windows, noise) derives from it.
        homography: thermal pixel -> RGB pixel, 3x3 or 9 numbers row-major (:data:`DEFAULT_H`). It is in
            pixels of the chosen size; the default is meant for 640x512.

    Raises:
        ConfigError: a size below 64x64, ``num_frames < 1``, ``fps <= 0``, a negative seed or a
            singular homography.

    The static background is rendered on construction (about 0.5 s at 640x512 on one laptop core);
    ``frame(i)`` renders the moving objects, glare and sensor noise (about 0.1 s) and does not depend
    on which frames were rendered before.
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 512,
        num_frames: int = 24,
        fps: float = 10.0,
        seed: int = 0,
        homography: np.ndarray | Sequence[float] = DEFAULT_H_TUPLE,
    ) -> None:
        if int(width) < 64 or int(height) < 64:
            raise ConfigError(f"scene size must be at least 64x64, got {width}x{height}")
        if int(num_frames) < 1:
            raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
        if not (math.isfinite(fps) and fps > 0):
            raise ConfigError(f"fps must be > 0, got {fps}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.width, self.height = int(width), int(height)
        self.num_frames, self.fps, self.seed = int(num_frames), float(fps), int(seed)
        self._h = _as_homography(homography)

        # The canvas is the RGB frame plus a margin, so that the thermal camera (which sees a slightly
        # different part of the world) samples rendered content everywhere and never a border fill.
        w, h = self.width, self.height
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T
        mapped = self._h @ corners
        mapped = mapped[:2] / mapped[2]
        over = max(0.0, -mapped.min(), float((mapped[0] - w).max()), float((mapped[1] - h).max()))
        self._margin = math.ceil(min(over, 4.0 * max(w, h))) + 16
        m = self._margin
        self._cw, self._ch = w + 2 * m, h + 2 * m
        self._f = _FOCAL_PER_WIDTH * w
        self._cx, self._cy = 0.5 * w + m, _HORIZON * h + m
        self._px = w / 640.0  # pixel-size scale of lens effects

        rng = _rng(self.seed, 0)
        self._layout(rng)
        self._render_static(rng)
        self._fpn = self._thermal_fixed_pattern(_rng(self.seed, 1))

    # ------------------------------------------------------------------ public API
    @property
    def homography(self) -> np.ndarray:
        """Thermal pixel -> RGB pixel, ``(3, 3)`` float64 (a copy)."""
        return self._h.copy()

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[SceneFrame]:
        for i in range(self.num_frames):
            yield self.frame(i)

    def frame(self, i: int) -> SceneFrame:
        """Render frame ``i`` (``0 <= i < len(self)``; negative indices count from the end).

        Raises:
            IndexError: ``i`` is out of range.
        """
        if not -self.num_frames <= i < self.num_frames:
            raise IndexError(f"frame index {i} out of range for a scene of {self.num_frames} frames")
        i = int(i) % self.num_frames
        t = i / self.fps
        rng = _rng(self.seed, 2, i)

        temp = self._bg_temp.copy()  # (Hc, Wc) float32 kelvin
        lin = self._bg_albedo * self._bg_light + self._bg_emit  # (Hc, Wc, 3) linear radiance
        car_state = self._car_pose(t)
        self._add_headlight_light(lin, car_state)

        objects: list[_Drawn] = []
        # Painter's order: farthest first. The car is behind every pedestrian in this layout.
        objects.append(self._draw_car(temp, lin, car_state))
        walkers = sorted(self._walkers, key=lambda wk: -wk.pose(t)[1])
        for wk in walkers:
            objects.append(self._draw_walker(temp, lin, wk, t, car_state))

        glare = self._glare(car_state)
        lin += glare
        rgb = self._rgb_sensor(lin, rng)
        thermal = self._thermal_sensor(temp, rng)

        boxes, ids, visible = [], [], []
        for cls, box, sl, alpha, before in objects:
            if box is None:
                continue
            boxes.append(box)
            ids.append(cls)
            visible.append(self._visible(lin, glare, sl, alpha, before))
        order = np.argsort(np.asarray([b[0] for b in boxes]), kind="stable") if boxes else []
        m = self._margin
        lights = [(u - m, v - m) for u, v in self._headlights(car_state)]
        lights = [(x, y) for x, y in lights if 0 <= x < self.width and 0 <= y < self.height]
        return SceneFrame(
            index=i,
            stamp=t,
            thermal=thermal,
            rgb=rgb,
            boxes=np.asarray([boxes[k] for k in order], np.float32).reshape(-1, 4),
            class_ids=np.asarray([ids[k] for k in order], np.int64),
            class_names=CLASS_NAMES,
            visible_in_rgb=np.asarray([visible[k] for k in order], bool),
            light_sources=np.asarray(lights, np.float32).reshape(-1, 2),
        )

    # ------------------------------------------------------------------ layout
    def _layout(self, rng: np.random.Generator) -> None:
        """Place the pedestrians, the car, the buildings; everything jittered a little by the seed.

        The nominal layout keeps every pedestrian clear of the others and of the headlight cores over the
        default 2.4 s: B walks away from the camera on the left, A crosses the lane from the right
        towards the middle, slightly diagonally (a three-quarter view: a pure side view loses the
        legs when they cross), C walks towards the camera on the right sidewalk at the edge of the
        lamp's pool of light.
        """

        def j(s: float) -> float:
            return float(rng.uniform(-s, s))

        def clothes(dark: float) -> np.ndarray:
            """RGB albedo of jacket, trousers, skin, hair, shoes (dark, desaturated clothing)."""
            tint = rng.uniform(0.7, 1.3, 3)
            skin = np.array([0.45, 0.32, 0.25]) * rng.uniform(0.5, 1.0)
            return np.stack([
                dark * tint / tint.mean(),
                rng.uniform(0.035, 0.06) * np.ones(3) * rng.uniform(0.85, 1.15, 3),
                skin,
                np.full(3, rng.uniform(0.02, 0.05)),
                np.full(3, 0.03),
            ]).astype(np.float32)

        def temps() -> tuple[float, float, float, float, float]:
            return (305.6 + j(0.6), 304.2 + j(0.6), 308.6 + j(0.3), 303.0 + j(0.6), 297.0 + j(1.0))

        zc = 6.2 + j(0.1)
        self._walkers = (
            _Walker((1.3 + j(0.1), zc + 0.5), (-0.4 + j(0.1), zc - 0.4), 0.75 + j(0.05), 1.78 + j(0.03),
                    float(rng.uniform(0, 2 * math.pi)), temps(), clothes(0.06)),
            _Walker((-1.6 + j(0.08), 4.4 + j(0.1)), (-1.6 + j(0.08), 6.3 + j(0.1)), 0.8 + j(0.05),
                    1.70 + j(0.03), float(rng.uniform(0, 2 * math.pi)), temps(), clothes(0.05)),
            _Walker((2.55 + j(0.08), 7.3 + j(0.1)), (2.55 + j(0.08), 6.1 + j(0.1)), 0.5 + j(0.04),
                    1.74 + j(0.03), float(rng.uniform(0, 2 * math.pi)), temps(), clothes(0.08)),
        )
        paint = rng.choice(np.array([[0.10, 0.10, 0.11], [0.14, 0.03, 0.03], [0.04, 0.06, 0.12],
                                     [0.30, 0.30, 0.31]], np.float32))
        self._car = _Car(-2.7 + j(0.1), 19.0 + j(0.3), 16.0 + j(0.2), 1.5, paint * rng.uniform(0.9, 1.1))

        # Building blocks along each side: (z edges, heights, facade temperature, albedo).
        self._blocks = []
        for _side in range(2):
            edges = [0.0]
            while edges[-1] < _FAR_Z:
                edges.append(edges[-1] + float(rng.uniform(7.0, 16.0)))
            n = len(edges) - 1
            self._blocks.append((
                np.asarray(edges, np.float32),
                rng.uniform(8.0, 21.0, n).astype(np.float32),
                rng.uniform(281.0, 283.5, n).astype(np.float32),
                (rng.uniform(0.09, 0.2, (n, 1)) * rng.uniform(0.85, 1.15, (n, 3))).astype(np.float32),
            ))
        self._lit = rng.random((2, 4096)) < 0.13  # which windows are lit, hashed by (column, floor)
        self._lit_level = rng.uniform(0.05, 0.25, (2, 4096)).astype(np.float32)
        self._lit_warm = rng.random((2, 4096)) < 0.8  # warm incandescent vs cool TV/LED light

    def _car_pose(self, t: float) -> tuple[float, float]:
        """``(X, Z)`` of the car's front centre on the ground at time ``t``."""
        c = self._car
        return c.x, max(c.z_stop, c.z_start - c.speed * t)

    # ------------------------------------------------------------------ static background
    def _render_static(self, rng: np.random.Generator) -> None:
        """Ray-cast sky, facades, ground and the lamp once: temperature, albedo, light and emission.

        Produces canvas-sized float32 layers: ``_bg_temp`` (Hc, Wc) kelvin, ``_bg_albedo``,
        ``_bg_light`` and ``_bg_emit`` (Hc, Wc, 3) linear, ``_ground_xz`` (Hc, Wc, 2) metres (NaN off
        the ground) and ``_ground_alb`` to light the road with the moving headlights, and the glare of
        the static lights. Each surface is shaded on its own pixels only (flat index arrays), at 2x
        supersampling, then box-filtered down to the canvas.
        """
        ss = _SUPERSAMPLE
        hs, ws = self._ch * ss, self._cw * ss
        n_px = hs * ws
        u = (np.arange(ws, dtype=np.float32) + 0.5) / ss - 0.5
        v = (np.arange(hs, dtype=np.float32) + 0.5) / ss - 0.5
        xr = np.broadcast_to(((u - self._cx) / self._f)[None, :], (hs, ws)).ravel()  # ray X per unit Z
        yr = np.broadcast_to(((v - self._cy) / self._f)[:, None], (hs, ws)).ravel()  # ray -Y per unit Z
        hc = _CAM_HEIGHT
        lx, ly, lz = _LAMP
        temp = np.zeros(n_px, np.float32)
        alb = np.zeros((n_px, 3), np.float32)
        light = np.zeros((n_px, 3), np.float32)
        emit = np.zeros((n_px, 3), np.float32)
        hit_z = np.full(n_px, np.inf, np.float32)  # distance along Z of the surface each ray hits

        # Facades: the ray meets the wall plane X = const between the ground and the block's roof.
        with np.errstate(divide="ignore"):
            zf = np.where(xr > 0, _FACADE_RIGHT / xr, _FACADE_LEFT / xr).astype(np.float32)
        yf = hc - yr * zf
        right = xr > 0
        cand = np.flatnonzero((yf >= 0) & (zf < _FAR_Z) & (xr != 0))
        side = right[cand].astype(np.int64)
        zc, yc = zf[cand], yf[cand]
        hb = np.empty(cand.size, np.float32)
        btemp = np.empty(cand.size, np.float32)
        balb = np.empty((cand.size, 3), np.float32)
        for sd in (0, 1):
            sel = side == sd
            edges, heights, temps, albs = self._blocks[sd]
            idx = np.clip(np.searchsorted(edges, zc[sel]) - 1, 0, len(heights) - 1)
            hb[sel], btemp[sel], balb[sel] = heights[idx], temps[idx], albs[idx]
        keep = yc <= hb
        fac, side, zc, yc, hb, btemp, balb = (a[keep] for a in (cand, side, zc, yc, hb, btemp, balb))
        hit_z[fac] = zc
        shop = yc < 3.6
        period = np.where(shop, 4.0, 2.6).astype(np.float32)
        col = np.floor(zc / period).astype(np.int64)
        fz = zc - col * period
        floor_i = np.where(shop, 0, np.floor((yc - 3.6) / 3.1).astype(np.int64) + 1)
        fy = np.where(shop, yc, yc - 3.6 - (floor_i - 1) * 3.1)
        win = np.where(shop, (fz > 0.4) & (fz < 3.4) & (fy > 0.5) & (fy < 2.8),
                       (fz > 0.7) & (fz < 1.9) & (fy > 0.9) & (fy < 2.4) & (yc < hb - 0.8)) & (zc < 120.0)
        key = (col * 31 + floor_i * 7 + side * 1013) % 4096
        lit = win & self._lit[side, key]
        warm = self._lit_warm[side, key]
        lit_rgb = np.where(warm[:, None], np.array([1.0, 0.72, 0.42], np.float32),
                           np.array([0.55, 0.65, 1.0], np.float32)) * self._lit_level[side, key][:, None]
        fade = np.clip(30.0 / np.maximum(zc, 1.0), 0.25, 1.0)[:, None]  # far windows blend into walls
        # Glass reflects the cold sky (-2.2 K); lit rooms warm it a little.
        temp[fac] = btemp - np.where(win, 2.2, 0.0) + np.where(lit, 0.8, 0.0)
        alb[fac] = np.where(win[:, None], np.float32(0.03), balb)
        emit[fac] = np.where(lit[:, None], lit_rgb * fade, 0.0)
        wall_x = np.where(side == 1, _FACADE_RIGHT, _FACADE_LEFT).astype(np.float32)
        d2 = (wall_x - lx) ** 2 + (yc - ly) ** 2 + (zc - lz) ** 2
        d = np.sqrt(d2)
        cosn = np.clip((ly - yc) / d, 0.0, 1.0)
        e_lamp = _LAMP_POWER * (cosn**1.5 + 0.05) * (np.abs(wall_x - lx) / d) / d2
        light[fac] = 0.6 * _AMBIENT + e_lamp[:, None] * _LAMP_RGB

        # Ground: road, lane markings, curbs, sidewalks with slab joints; low-frequency texture.
        gnd = np.flatnonzero((yr > 0) & ~np.isfinite(hit_z))
        gz = (hc / yr[gnd]).astype(np.float32)
        gx = xr[gnd] * gz
        hit_z[gnd] = gz
        tex = self._smooth_noise(rng, (hs, ws), 24 * ss).ravel()[gnd]
        road = (gx > _ROAD_LEFT) & (gx < _ROAD_RIGHT)
        centre = (np.abs(gx - _CENTRE_LINE) < 0.07) & (np.mod(gz, 9.0) < 3.0)
        edge = (np.abs(gx - (_ROAD_LEFT + 0.3)) < 0.06) | (np.abs(gx - (_ROAD_RIGHT - 0.3)) < 0.06)
        paint = road & (centre | edge)
        curb = ~road & ((np.abs(gx - _ROAD_LEFT) < 0.15) | (np.abs(gx - _ROAD_RIGHT) < 0.15))
        joint = ~road & ~curb & ((np.mod(gz, 1.2) < 0.035) | (np.mod(gx, 1.2) < 0.035))
        g_alb = np.where(road, 0.06 * (1.0 + 0.25 * tex), 0.16 * (1.0 + 0.1 * tex))
        g_alb = np.where(paint, 0.45, np.where(curb, 0.25, np.where(joint, 0.09, g_alb)))
        # Asphalt keeps the day's heat longer than concrete; paint and joints emit a little less.
        g_temp = np.where(road, 285.6 + 0.35 * tex, 284.3 + 0.2 * tex)
        temp[gnd] = g_temp - 0.7 * paint - 0.6 * curb - 0.25 * joint
        alb[gnd] = g_alb[:, None] * np.array([1.0, 0.98, 0.95], np.float32)
        d2 = (gx - lx) ** 2 + ly**2 + (gz - lz) ** 2
        cosn = ly / np.sqrt(d2)
        e_lamp = _LAMP_POWER * (cosn**1.5 + 0.05) * cosn / d2
        light[gnd] = _AMBIENT + e_lamp[:, None] * _LAMP_RGB

        # Sky: cold in LWIR (clear night sky ~250 K overhead), orange light-pollution glow near horizon.
        sky = np.flatnonzero(~np.isfinite(hit_z))
        elev = np.arctan(np.maximum(-yr[sky], 0.0))
        temp[sky] = 249.0 + 24.0 * np.exp(-elev / 0.22)
        emit[sky] = (np.array([0.0012, 0.0014, 0.0024], np.float32)
                     + np.exp(-elev / 0.09)[:, None] * np.array([0.010, 0.0065, 0.0035], np.float32))

        # The lamp: pole, arm and head, a billboard in the plane Z = lamp Z, in front of what is behind.
        xz = xr * lz
        yz = hc - yr * lz
        behind = hit_z > lz
        pole = (np.abs(xz - _LAMP_POLE_X) < 0.07) & (yz >= 0.0) & (yz <= ly + 0.1)
        arm = (xz > lx) & (xz < _LAMP_POLE_X + 0.05) & (np.abs(yz - (ly + 0.05)) < 0.045)
        head = (np.abs(xz - lx) < 0.28) & (yz > ly - 0.12) & (yz < ly + 0.06)
        metal = np.flatnonzero(behind & (pole | arm | head))
        is_head = head[metal]
        temp[metal] = np.where(is_head, 316.0, 280.0)  # the LED driver warms the head; the pole is cool
        alb[metal] = 0.2
        light[metal] = _AMBIENT + 0.3 * _LAMP_RGB
        emit[metal] = np.where((is_head & (yz[metal] < ly - 0.07))[:, None], 25.0 * _LAMP_RGB, 0.0)

        def down(a: np.ndarray) -> np.ndarray:
            return cv2.resize(a.reshape(hs, ws, -1), (self._cw, self._ch), interpolation=cv2.INTER_AREA)

        self._bg_temp = down(temp)
        self._bg_albedo = down(alb)
        self._bg_light = down(light)
        self._bg_emit = down(emit)
        gxz = np.full((n_px, 2), np.nan, np.float32)
        gxz[gnd, 0], gxz[gnd, 1] = gx, gz
        self._ground_xz = gxz.reshape(hs, ws, 2)[ss // 2 :: ss, ss // 2 :: ss].copy()
        galb = np.zeros((n_px, 3), np.float32)
        galb[gnd] = alb[gnd]
        self._ground_alb = down(galb)

        # Lens glare of the static lights: the lamp and a few distant street lights down the street.
        self._static_glare = np.zeros((self._ch, self._cw, 3), np.float32)
        u_l, v_l = self._project(lx, ly - 0.1, lz)
        self._add_glow(self._static_glare, u_l, v_l, 0.3, _LAMP_RGB, core=0.0, streak=0.0, spikes=False)
        for zz, xx in ((32.0, 3.3), (55.0, -6.5), (78.0, 3.3), (101.0, -6.5)):
            uu, vv = self._project(xx, 5.5, zz)
            self._add_glow(self._static_glare, uu, vv, 0.25 / zz, _LAMP_RGB, core=0.0, streak=0.0,
                           spikes=False)

    @staticmethod
    def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
        """Unit-variance-ish low-frequency noise of ``shape`` (features about ``cell`` px), float32."""
        small = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2)).astype(np.float32)
        return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)

    def _project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """World point (m) -> canvas pixel (u, v)."""
        return self._cx + self._f * x / z, self._cy + self._f * (_CAM_HEIGHT - y) / z

    # ------------------------------------------------------------------ lights and lens
    def _add_headlight_light(self, lin: np.ndarray, car: tuple[float, float]) -> None:
        """Light the road in front of the car with two low beams (in place on ``lin``)."""
        cx, cz = car
        gxz = self._ground_xz[::2, ::2]  # the beam's light varies slowly: half resolution suffices
        gx, gz = gxz[..., 0], gxz[..., 1]
        rows = np.nonzero(np.isfinite(gz).any(1))[0]
        if rows.size == 0:
            return
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        gx, gz = gx[r0:r1], gz[r0:r1]
        e = np.zeros(gx.shape, np.float32)
        for off in (-0.64, 0.64):
            dx, dz = gx - (cx + off), cz - gz  # dz > 0: in front of the car
            d2 = dx * dx + dz * dz + 0.65**2
            ang = np.arctan2(np.abs(dx), np.maximum(dz, 1e-3))
            beam = np.exp(-((ang / 0.22) ** 2)) * (dz > 0.3)
            e += np.nan_to_num(_BEAM_POWER * beam * 0.65 / np.sqrt(d2) / d2, nan=0.0)
        sl = slice(2 * r0, min(self._ch, 2 * r1))
        e = cv2.resize(e, (self._cw, 2 * (r1 - r0)), interpolation=cv2.INTER_LINEAR)[: sl.stop - sl.start]
        lin[sl] += self._ground_alb[sl] * e[..., None] * _HEADLIGHT_RGB

    def _add_glow(self, out: np.ndarray, u: float, v: float, gain: float, rgb: np.ndarray,
                  core: float, streak: float, spikes: bool) -> None:
        """Add one light source's lens glare to ``out`` (canvas, linear RGB), in place.

        The profile is a saturated core of radius ``core`` px, a two-scale bloom (veiling glare), a
        horizontal streak of relative strength ``streak`` and, with ``spikes``, a six-point diffraction
        star. Sizes scale with the image
        width, so the glare covers the same fraction of the frame at any resolution.
        """
        ch, cw = out.shape[:2]
        s = self._px

        def window(rx: float, ry: float) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
            x0, x1 = max(0, int(u - rx)), min(cw, int(u + rx) + 1)
            y0, y1 = max(0, int(v - ry)), min(ch, int(v + ry) + 1)
            if x0 >= x1 or y0 >= y1:
                return None
            dx = (np.arange(x0, x1, dtype=np.float32) - u)[None, :]
            dy = (np.arange(y0, y1, dtype=np.float32) - v)[:, None]
            return (slice(y0, y1), slice(x0, x1)), dx, dy

        # Wide, faint veiling-glare tail (reaches ~1/2 of the frame), then the bright bloom near the core.
        win = window(260 * s, 260 * s)
        if win is None:
            return
        sl, dx, dy = win
        out[sl] += (gain * 0.07 / (1.0 + (dx * dx + dy * dy) / (30 * s) ** 2) ** 1.3)[..., None] * rgb
        win = window(150 * s, 150 * s)
        if win is not None:
            sl, dx, dy = win
            r2 = dx * dx + dy * dy
            g = gain * (2.5 * np.exp(-r2 / (2 * (14 * s) ** 2)) + 30.0 * np.exp(-r2 / (2 * (5 * s) ** 2)))
            if core > 0:
                g += 40.0 * (r2 <= core * core)
            if spikes:
                r = np.sqrt(r2)
                for a in (0.35, 0.35 + math.pi / 3, 0.35 + 2 * math.pi / 3):
                    perp = dx * math.sin(a) - dy * math.cos(a)
                    g += gain * 0.6 * np.exp(-(perp * perp) / (2 * (0.9 * s) ** 2)) * np.exp(-r / (32 * s))
            out[sl] += g[..., None] * rgb
        if streak > 0:  # anamorphic-looking horizontal streak across the frame
            win = window(700 * s, 8 * s)
            if win is not None:
                sl, dx, dy = win
                g = gain * streak * np.exp(-(dy * dy) / (2 * (1.6 * s) ** 2))
                g = g * np.exp(-np.abs(dx) / (110 * s))
                out[sl] += g[..., None] * rgb

    def _headlights(self, car: tuple[float, float]) -> list[tuple[float, float]]:
        """Canvas pixel positions of the two headlights."""
        cx, cz = car
        return [self._project(cx + off, 0.62, cz) for off in (-0.64, 0.64)]

    def _glare(self, car: tuple[float, float]) -> np.ndarray:
        """Canvas-sized linear RGB glare of all lights this frame: headlights, ghosts, static lights."""
        glare = self._static_glare.copy()
        cz = car[1]
        gain = min(1.6, 16.0 / cz)
        for u, v in self._headlights(car):
            core = max(3.0, 0.11 * self._f / cz)
            self._add_glow(glare, u, v, gain, _HEADLIGHT_RGB, core=core, streak=0.8, spikes=True)
            # Lens ghosts: faint discs mirrored through the optical centre.
            for k, rad, tint in ((0.45, 9.0, (0.5, 1.0, 0.6)), (0.9, 22.0, (0.8, 0.55, 1.0)),
                                 (1.4, 14.0, (1.0, 0.8, 0.5))):
                gu = self._cx + k * (self._cx - u)
                gv = self._cy + k * (self._cy - v)
                rr = rad * self._px
                x0, x1 = max(0, int(gu - 2 * rr)), min(self._cw, int(gu + 2 * rr) + 1)
                y0, y1 = max(0, int(gv - 2 * rr)), min(self._ch, int(gv + 2 * rr) + 1)
                if x0 >= x1 or y0 >= y1:
                    continue
                ddx = np.arange(x0, x1, dtype=np.float32)[None, :] - gu
                ddy = np.arange(y0, y1, dtype=np.float32)[:, None] - gv
                disc = 1.0 / (1.0 + np.exp((np.sqrt(ddx * ddx + ddy * ddy) - rr) / 1.5))
                glare[y0:y1, x0:x1] += (0.035 * gain * disc)[..., None] * np.asarray(tint, np.float32)
        return glare

    # ------------------------------------------------------------------ moving objects
    def _patch(self, u: float, v: float, pw: int, ph: int, above: int
               ) -> tuple[int, int, tuple[float, float]]:
        """Top-left canvas corner of a ``pw x ph`` patch whose anchor (u, v) lies ``above`` px up from
        the bottom, and the anchor in 4x supersampled patch coordinates."""
        x0 = round(u) - pw // 2
        y0 = round(v) - above
        return x0, y0, ((u - x0) * _SS_OBJ + (_SS_OBJ - 1) / 2, (v - y0) * _SS_OBJ + (_SS_OBJ - 1) / 2)

    def _composite(
        self, temp: np.ndarray, lin: np.ndarray, x0: int, y0: int, cov: np.ndarray,
        t_obj: np.ndarray, rad: np.ndarray, box_cov: np.ndarray,
    ) -> tuple[np.ndarray | None, tuple[slice, slice], np.ndarray, np.ndarray]:
        """Alpha-blend one object (coverage ``cov`` (ph, pw), temperature, radiance) into the canvas.

        Returns the ground-truth box (RGB pixels, or None when the object is out of the frame), the
        canvas slices, the clipped alpha and the radiance that was there before (for visibility).
        """
        ph, pw = cov.shape
        cy0, cx0 = max(0, y0), max(0, x0)
        cy1, cx1 = min(self._ch, y0 + ph), min(self._cw, x0 + pw)
        if cy0 >= cy1 or cx0 >= cx1:
            return None, (slice(0, 0), slice(0, 0)), cov[:0, :0], lin[:0, :0].copy()
        ps = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        sl = (slice(cy0, cy1), slice(cx0, cx1))
        a = cov[ps]
        before = lin[sl].copy()
        temp[sl] = temp[sl] * (1.0 - a) + a * t_obj[ps]
        lin[sl] = before * (1.0 - a[..., None]) + a[..., None] * rad[ps]
        m = self._margin
        ys, xs = np.nonzero(box_cov > 0.5)
        if ys.size == 0:
            return None, sl, a, before
        bx0 = np.clip(x0 + xs.min() - m, 0, self.width)
        bx1 = np.clip(x0 + xs.max() + 1 - m, 0, self.width)
        by0 = np.clip(y0 + ys.min() - m, 0, self.height)
        by1 = np.clip(y0 + ys.max() + 1 - m, 0, self.height)
        box = None if (bx1 - bx0 < 2 or by1 - by0 < 2) else np.array([bx0, by0, bx1, by1], np.float32)
        return box, sl, a, before

    def _lamp_light(self, x: float, y: np.ndarray, z: float, up: float) -> np.ndarray:
        """Street-lamp illuminance on points (x, y, z) of an upright object, ``(len(y), 3)``.

        ``up`` weights how much of the light from above reaches the visible (camera-facing) surface:
        the lamp stands behind the objects, so mostly tops of heads and shoulders catch it.
        """
        lx, ly, lz = _LAMP
        d2 = (lx - x) ** 2 + (ly - y) ** 2 + (lz - z) ** 2
        cosn = np.clip((ly - y) / np.sqrt(d2), 0.0, 1.0)
        e = _LAMP_POWER * (cosn**1.5 + 0.05) * (0.15 + up * cosn**2) / d2
        return (e[:, None] * _LAMP_RGB).astype(np.float32)

    def _headlight_light(self, x: float, y: np.ndarray, z: float, car: tuple[float, float]) -> np.ndarray:
        """Low-beam light reaching the camera-facing side of points (x, y, z), ``(len(y), 3)``.

        The car faces the camera, so it lights the far side of anyone between the two; the camera sees
        only scattered rim light (6 %), mostly on the legs (the low beam is cut off above ~0.8 m).
        Pedestrians in front of the beam therefore show as dark silhouettes on the lit road."""
        cx, cz = car
        e = np.zeros(y.shape, np.float32)
        dz = cz - z
        if dz <= 0.3:
            return np.zeros((y.size, 3), np.float32)
        for off in (-0.64, 0.64):
            dx = x - (cx + off)
            d2 = dx * dx + dz * dz + (y - 0.62) ** 2
            beam = math.exp(-((math.atan2(abs(dx), dz) / 0.22) ** 2))
            cutoff = 0.1 + 0.9 / (1.0 + np.exp((y - 0.8) / 0.08))
            e += 0.06 * _BEAM_POWER * beam * cutoff / d2
        return (e[:, None] * _HEADLIGHT_RGB).astype(np.float32)

    def _draw_walker(self, temp: np.ndarray, lin: np.ndarray, wk: _Walker, t: float,
                     car: tuple[float, float]) -> _Drawn:
        """Draw one pedestrian into both canvases; return (class, box, slices, alpha, before)."""
        x, z, psi, phase = wk.pose(t)
        h = self._f * wk.height / z  # pixel height
        u, v = self._project(x, 0.0, z)
        pw, ph = int(0.95 * h) + 8, int(1.14 * h) + 8
        x0, y0, origin = self._patch(u, v, pw, ph, ph - int(0.05 * h) - 4)
        lab = np.zeros((ph * _SS_OBJ, pw * _SS_OBJ), np.uint8)
        _draw_person(lab, origin, h * _SS_OBJ, phase, psi)
        parts = _coverage(lab, 5)  # (ph, pw, 5): jacket, trousers, skin, hair, shoes
        alpha = np.clip(parts.sum(-1), 0.0, 1.0)
        inv = 1.0 / np.maximum(parts.sum(-1), 1e-6)

        # Temperature: part temperatures, warmer chest, cooler silhouette rim (grazing emission).
        t_obj = (parts @ np.asarray(wk.temps, np.float32)) * inv
        rows = np.arange(ph, dtype=np.float32)[:, None]
        rel = (origin[1] / _SS_OBJ - rows) / h  # height above the feet as a fraction of body height
        t_obj += 0.9 * parts[..., 0] * inv * np.exp(-(((rel - 0.68) / 0.12) ** 2))
        core = cv2.GaussianBlur(alpha, (0, 0), max(0.8, 0.03 * h))
        t_obj += 1.8 * (np.clip(core, 0.0, 1.0) - 0.75)

        # Radiance: albedo times the light arriving at that height (ambient, lamp, low beams).
        y_world = (rel[:, 0] * wk.height).astype(np.float32)
        e = 0.55 * _AMBIENT + self._lamp_light(x, y_world, z, up=0.6)
        e = e + self._headlight_light(x, y_world, z, car)
        rad = ((parts @ wk.albedo) * inv[..., None]) * e[:, None, :]
        box, sl, a, before = self._composite(temp, lin, x0, y0, alpha, t_obj, rad, alpha)
        return _PERSON, box, sl, a, before

    def _draw_car(self, temp: np.ndarray, lin: np.ndarray, car: tuple[float, float]) -> _Drawn:
        """Draw the car (front view) into both canvases; return (class, box, slices, alpha, before)."""
        cx, cz = car
        k = self._f / cz  # pixels per metre
        u, v = self._project(cx, 0.0, cz)
        pw, ph = int(2.3 * k) + 8, int(1.7 * k) + 8
        x0, y0, origin = self._patch(u, v, pw, ph, ph - int(0.1 * k) - 4)
        lab = np.zeros((ph * _SS_OBJ, pw * _SS_OBJ), np.uint8)
        _draw_car_front(lab, origin, k * _SS_OBJ)
        parts = _coverage(lab, len(_CAR_PARTS))
        alpha = np.clip(parts.sum(-1), 0.0, 1.0)
        inv = 1.0 / np.maximum(parts.sum(-1), 1e-6)
        temps = np.array([p[1] for p in _CAR_PARTS], np.float32)
        albedo = np.array([self._car.albedo if p[2] is None else (p[2],) * 3 for p in _CAR_PARTS],
                          np.float32)
        t_obj = cv2.GaussianBlur((parts @ temps) * inv, (0, 0), max(0.6, 0.02 * k))
        rows = np.arange(ph, dtype=np.float32)
        y_world = ((origin[1] / _SS_OBJ - rows) / k).astype(np.float32)
        e = 0.6 * _AMBIENT + self._lamp_light(cx, y_world, cz, up=0.9)
        rad = ((parts @ albedo) * inv[..., None]) * e[:, None, :]
        box, sl, a, before = self._composite(temp, lin, x0, y0, alpha, t_obj, rad, alpha)
        return _CAR, box, sl, a, before

    # ------------------------------------------------------------------ sensors
    def _rgb_sensor(self, lin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Linear canvas radiance -> uint8 RGB frame: crop, lens blur, vignetting, shot + dark noise,
        clipping at full scale (the glare saturates), gamma 1/2.2, 8-bit quantisation."""
        m = self._margin
        img = lin[m : m + self.height, m : m + self.width]
        img = cv2.GaussianBlur(img, (0, 0), 0.75 * self._px) * self._vignette
        sigma = np.sqrt(_READ_NOISE**2 + _SHOT_NOISE * np.maximum(img, 0.0))
        img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        idx = (np.clip(img, 0.0, 1.0) * (_GAMMA_LUT.size - 1) + 0.5).astype(np.int32)
        return _GAMMA_LUT[idx]

    def _thermal_sensor(self, temp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Kelvin canvas -> uint16 centi-kelvin frame in the thermal camera's grid: optics blur,
        homography resampling, fixed-pattern + temporal noise, quantisation."""
        m = self._margin
        to_canvas = np.array([[1, 0, m], [0, 1, m], [0, 0, 1]], np.float64) @ self._h
        blurred = cv2.GaussianBlur(temp, (0, 0), 0.7 * self._px)
        img = cv2.warpPerspective(blurred, to_canvas, (self.width, self.height),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
        img = cv2.GaussianBlur(img, (0, 0), 0.5 * self._px) * 100.0 + self._fpn
        img = img + _THERMAL_NOISE_CK * rng.standard_normal(img.shape, dtype=np.float32)
        return np.clip(np.rint(img), 0, 65535).astype(np.uint16)

    def _thermal_fixed_pattern(self, rng: np.random.Generator) -> np.ndarray:
        """Per-camera fixed pattern in centi-kelvin, ``(H, W)`` float32: column offsets (readout),
        per-pixel offsets and a shallow radial shading; also builds the RGB vignetting map."""
        h, w = self.height, self.width
        cols = rng.normal(0.0, 6.0, (1, w))
        pix = rng.normal(0.0, 3.0, (h, w))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        self._vignette = (1.0 - 0.25 * r2)[..., None].astype(np.float32)
        return (cols + pix + 30.0 * (r2 - 0.5)).astype(np.float32)

    @staticmethod
    def _visible(lin: np.ndarray, glare: np.ndarray, sl: tuple[slice, slice], alpha: np.ndarray,
                 before: np.ndarray) -> bool:
        """Whether an object stands out from its background in the noise-free RGB image: mean absolute
        display-luma difference over its silhouette (with the glare on top) of at least 0.05."""
        mask = alpha > 0.5
        if not mask.any():
            return False
        g = glare[sl]
        luma = np.array([0.299, 0.587, 0.114], np.float32)
        with_obj = np.clip(lin[sl][mask], 0.0, 1.0) ** (1 / 2.2) @ luma
        without = np.clip((before + g)[mask], 0.0, 1.0) ** (1 / 2.2) @ luma
        return bool(np.mean(np.abs(with_obj - without)) >= 0.05)


# ---------------------------------------------------------------------- drawing helpers
_SS_OBJ = 4  # supersampling of the moving objects' part masks
_GAMMA_LUT = np.round(255.0 * np.linspace(0.0, 1.0, 4096) ** (1 / 2.2)).astype(np.uint8)

#: Car parts: (name, temperature K, grey albedo or None for the paint), in label order 1..N.
_CAR_PARTS: tuple[tuple[str, float, float | None], ...] = (
    ("underbody", 306.0, 0.01),  # warm engine bay and asphalt seen under the car
    ("exhaust", 326.0, 0.01),
    ("tyre", 302.0, 0.03),  # warm from driving
    ("body", 291.0, None),
    ("hood", 299.0, None),  # engine heat through the bonnet
    ("grille", 309.0, 0.03),  # radiator
    ("intake", 315.0, 0.02),
    ("plate", 289.0, 0.55),
    ("headlight", 294.0, 0.6),  # LED headlights: bright in RGB, only slightly warm
    ("windshield", 271.0, 0.02),  # glass reflects the cold sky in LWIR
    ("roof", 281.5, None),
    ("mirror", 289.0, None),
)


def _coverage(lab: np.ndarray, n: int) -> np.ndarray:
    """Per-label coverage of a 4x supersampled label image: ``(h/4, w/4, n)`` float32 in [0, 1].

    INTER_AREA with an integer factor is the exact 4x4 box average, i.e. anti-aliased part masks.
    """
    h, w = lab.shape[0] // _SS_OBJ, lab.shape[1] // _SS_OBJ
    lab = lab[: h * _SS_OBJ, : w * _SS_OBJ]
    out = np.zeros((h, w, n), np.float32)
    for k in np.unique(lab):
        if 1 <= k <= n:
            out[..., k - 1] = cv2.resize((lab == k).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return out


def _pt(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))


def _capsule(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, label: int) -> None:
    """Fill a tapered capsule (a limb): radius r0 at p0, r1 at p1, round ends."""
    d = p1 - p0
    length = float(np.hypot(d[0], d[1]))
    if length > 1e-6:
        n = np.array([-d[1], d[0]]) / length
        poly = np.array([p0 + n * r0, p1 + n * r1, p1 - n * r1, p0 - n * r0])
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], label)
    cv2.circle(img, _pt(p0), max(1, round(r0)), label, -1)
    cv2.circle(img, _pt(p1), max(1, round(r1)), label, -1)


def _draw_person(lab: np.ndarray, origin: tuple[float, float], h: float, phase: float, psi: float) -> None:
    """Draw a walking person's part labels (1 jacket, 2 trousers, 3 skin, 4 hair, 5 shoes) into ``lab``.

    Proportions follow the usual eighth-of-height canon (head 0.13 h, shoulders at 0.81 h and 0.25 h
    wide, hips at 0.5 h). ``origin`` is the point between the feet in ``lab`` pixels, ``h`` the body
    height in ``lab`` pixels, ``phase`` the gait phase (radians) and ``psi`` the walking direction
    (0 towards the camera, pi/2 to the right). Body-frame points (lateral a, forward b, up y, in units
    of h) project orthographically; limbs are drawn far to near.
    """
    c, s = math.cos(psi), math.sin(psi)
    ox, oy = origin

    def proj(a: float, b: float, y: float) -> tuple[np.ndarray, float]:
        return np.array([ox + (a * c + b * s) * h, oy - y * h]), a * s - b * c

    def width(lat: float, depth: float) -> float:  # half-width of a body slice seen from psi
        return math.hypot(lat * c, depth * s) * h

    # Legs: thigh swing +-22 deg, knee flexing most in mid-swing; the lowest foot stays on the ground.
    legs = []
    for side, ph in ((1.0, phase), (-1.0, phase + math.pi)):
        th = 0.38 * math.sin(ph)
        knee_flex = 0.12 + 0.75 * max(0.0, math.cos(ph)) ** 1.5
        hip = (side * 0.055, 0.0, 0.50)
        knee = (hip[0], 0.245 * math.sin(th), 0.50 - 0.245 * math.cos(th))
        ankle = (hip[0], knee[1] + 0.25 * math.sin(th - knee_flex), knee[2] - 0.25 * math.cos(th - knee_flex))
        toe = (hip[0], ankle[1] + 0.07, ankle[2] - 0.025)
        legs.append((hip, knee, ankle, toe))
    lift = 0.025 - min(min(leg[2][2], leg[3][2]) for leg in legs)

    def p3(q: tuple[float, float, float]) -> tuple[np.ndarray, float]:
        return proj(q[0], q[1], q[2] + lift)

    layers: list[tuple[float, int, object]] = []
    for i, (hip, knee, ankle, toe) in enumerate(legs):
        ph_, depth = p3(hip)
        pk, pa, pt = p3(knee)[0], p3(ankle)[0], p3(toe)[0]

        def leg(ph_=ph_, pk=pk, pa=pa, pt=pt) -> None:
            _capsule(lab, ph_, pk, 0.052 * h, 0.036 * h, 2)
            _capsule(lab, pk, pa, 0.034 * h, 0.024 * h, 2)
            _capsule(lab, pa, pt, 0.022 * h, 0.017 * h, 5)

        layers.append((depth, i, leg))

    base = proj(0.0, 0.0, lift)[0]
    # Torso outline from the shoulders down to the jacket hem, hips below it in trouser fabric.
    levels = ((0.835, width(0.085, 0.06)), (0.805, width(0.125, 0.07)), (0.76, width(0.125, 0.075)),
              (0.64, width(0.105, 0.07)), (0.55, width(0.10, 0.07)), (0.47, width(0.095, 0.07)))
    hips = ((0.56, width(0.095, 0.065)), (0.47, width(0.098, 0.07)), (0.43, width(0.09, 0.06)))
    lean = 0.02 * s  # a slight forward lean while walking

    def outline(lv: tuple[tuple[float, float], ...]) -> np.ndarray:
        left = [(base[0] + lean * y * h - w, base[1] - y * h) for y, w in lv]
        right = [(base[0] + lean * y * h + w, base[1] - y * h) for y, w in lv[::-1]]
        return np.round(np.array(left + right)).astype(np.int32)

    def torso() -> None:
        cv2.fillPoly(lab, [outline(hips)], 2)
        cv2.fillPoly(lab, [outline(levels)], 1)
        sh = width(0.10, 0.06)
        for sx in (-sh, sh):  # rounded shoulders
            cv2.circle(lab, _pt(base + np.array([sx + lean * 0.8 * h, -0.785 * h])),
                       max(1, round(0.045 * h)), 1, -1)
        top = base + np.array([lean * 0.9 * h + 0.012 * s * h, 0.0])
        _capsule(lab, top + np.array([0.0, -0.80 * h]), top + np.array([0.0, -0.885 * h]),
                 0.03 * h, 0.027 * h, 3)  # neck
        hc = top + np.array([0.018 * s * h, -0.935 * h])
        hw = width(0.048, 0.058)
        cv2.ellipse(lab, _pt(hc), (max(1, round(hw)), max(1, round(0.066 * h))), 0, 0, 360, 4, -1)
        # Face: the part of the head turned towards the camera is skin, the rest hair.
        facing = max(0.0, c)  # 1 facing the camera, 0 side-on or away
        side_on = abs(s)
        if facing > 0.05 or side_on > 0.3:
            fw = hw * (0.25 + 0.55 * facing + 0.25 * side_on * (1 - facing))
            fc = hc + np.array([0.022 * s * h * (1 - facing), 0.012 * h])
            cv2.ellipse(lab, _pt(fc), (max(1, round(fw)), max(1, round(0.05 * h))), 0, 0, 360, 3, -1)

    layers.append((0.0, 2, torso))
    # Arms swing opposite to the legs, elbows bend more on the forward swing.
    for i, (side, ph) in enumerate(((1.0, phase + math.pi), (-1.0, phase))):
        swing = 0.33 * math.sin(ph)
        bend = 0.2 + 0.3 * max(0.0, math.sin(ph))
        sh3 = (side * 0.118, 0.0, 0.785)
        el3 = (side * 0.13, 0.175 * math.sin(swing), 0.785 - 0.175 * math.cos(swing))
        wr3 = (side * 0.135, el3[1] + 0.15 * math.sin(swing + bend), el3[2] - 0.15 * math.cos(swing + bend))
        psh, depth = p3(sh3)
        pe, pw_ = p3(el3)[0], p3(wr3)[0]

        def arm(psh=psh, pe=pe, pw_=pw_) -> None:
            _capsule(lab, psh, pe, 0.034 * h, 0.027 * h, 1)
            _capsule(lab, pe, pw_, 0.026 * h, 0.02 * h, 1)
            d = pw_ - pe
            hand = pw_ + d / max(1e-6, float(np.hypot(d[0], d[1]))) * 0.03 * h
            cv2.circle(lab, _pt(hand), max(1, round(0.024 * h)), 3, -1)

        layers.append((depth, 3 + i, arm))
    for _, _, draw in sorted(layers, key=lambda item: (-item[0], item[1])):
        draw()  # type: ignore[operator]


def _draw_car_front(lab: np.ndarray, origin: tuple[float, float], k: float) -> None:
    """Draw the part labels of a car seen from the front (:data:`_CAR_PARTS` order) into ``lab``.

    ``origin`` is the centre of the car's footprint front edge on the ground in ``lab`` pixels and
    ``k`` pixels per metre; shapes are in metres (x right, y up) of a 1.85 m wide, 1.47 m tall hatchback.
    """
    ox, oy = origin

    def poly(pts: list[tuple[float, float]], label: int) -> None:
        arr = np.array([[ox + x * k, oy - y * k] for x, y in pts])
        cv2.fillPoly(lab, [np.round(arr).astype(np.int32)], label)

    def box(x0: float, y0: float, x1: float, y1: float, label: int) -> None:
        poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label)

    lbl = {name: i + 1 for i, (name, _, _) in enumerate(_CAR_PARTS)}
    box(-0.80, 0.02, 0.80, 0.26, lbl["underbody"])
    cv2.ellipse(lab, _pt((ox + 0.52 * k, oy - 0.11 * k)), (max(1, round(0.11 * k)), max(1, round(0.06 * k))),
                0, 0, 360, lbl["exhaust"], -1)
    for sx in (-1, 1):
        box(sx * 0.60, 0.0, sx * 0.86, 0.42, lbl["tyre"])
    poly([(-0.90, 0.24), (-0.84, 0.19), (0.84, 0.19), (0.90, 0.24), (0.93, 0.70), (-0.93, 0.70)], lbl["body"])
    poly([(-0.93, 0.69), (0.93, 0.69), (0.85, 0.92), (-0.85, 0.92)], lbl["hood"])
    poly([(-0.82, 0.91), (0.82, 0.91), (0.60, 1.40), (-0.60, 1.40)], lbl["body"])
    poly([(-0.73, 0.95), (0.73, 0.95), (0.54, 1.34), (-0.54, 1.34)], lbl["windshield"])
    poly([(-0.60, 1.38), (0.60, 1.38), (0.55, 1.47), (-0.55, 1.47)], lbl["roof"])
    for sx in (-1, 1):
        poly([(sx * 0.80, 0.94), (sx * 1.02, 0.96), (sx * 1.02, 1.07), (sx * 0.82, 1.06)], lbl["mirror"])
    box(-0.40, 0.42, 0.40, 0.64, lbl["grille"])
    box(-0.55, 0.22, 0.55, 0.30, lbl["intake"])
    box(-0.26, 0.31, 0.26, 0.42, lbl["plate"])
    for sx in (-1, 1):
        cv2.ellipse(lab, _pt((ox + sx * 0.64 * k, oy - 0.62 * k)),
                    (max(1, round(0.19 * k)), max(1, round(0.065 * k))), 0, 0, 360, lbl["headlight"], -1)
