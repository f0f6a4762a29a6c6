"""The procedural driving world: a straight street built from analytic primitives.

World frame: x along the street, y to the left, z up, road surface at z = 0. Layout across
the street (|y| in metres): driving lanes 0-4.5 (ego drives in the right lane, y < 0, along
+x), parking lanes 4.5-7, sidewalks (0.15 m kerb) 7-10, a terrain strip with trees 10-12.5,
then buildings. Everything is generated from one integer seed with numpy's PCG64, so the
same seed gives the same world on any machine.

Primitives are boxes (yawed about z), vertical cylinders and ellipsoids; each carries an
Occ3D class label, a material (textures.py), a base colour, an instance id (-1 for stuff)
and a constant velocity (moving cars and pedestrians). The ground plane z = 0 is implicit:
driveable_surface for |y| < ROAD_HALF_WIDTH, terrain elsewhere (sidewalks are boxes on top).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from selfocc_core.classes import CLASS_ID
from selfocc_core.synth import textures as tx

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
ROAD_HALF_WIDTH = 7.0
SIDEWALK_OUTER = 10.0
KERB_HEIGHT = 0.15
LANE_Y = -2.25  # centre of the ego's driving lane


@dataclass
class Primitives:
    """A set of P primitives at time 0 (all tensors have leading dimension P).

    kind:     [P] int64 BOX / CYLINDER / ELLIPSOID
    center:   [P, 3] float32 world position of the centre at t = 0
    half:     [P, 3] box half extents; cylinder (radius, radius, half height); ellipsoid radii
    yaw:      [P] rotation about world z (local -> world)
    label:    [P] int64 Occ3D class id
    material: [P] int64 textures.* material id
    color:    [P, 3] base RGB in [0, 1]
    instance: [P] int64 object id (-1 = stuff); parts of one car share it
    velocity: [P, 3] m/s, constant
    """

    kind: Tensor
    center: Tensor
    half: Tensor
    yaw: Tensor
    label: Tensor
    material: Tensor
    color: Tensor
    instance: Tensor
    velocity: Tensor

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def at(self, t: float) -> "Primitives":
        """The primitives at time t (s): moving ones advanced by velocity * t."""
        return replace(self, center=self.center + self.velocity * float(t))

    def subset(self, index: Tensor) -> "Primitives":
        return Primitives(**{k: getattr(self, k)[index] for k in self.__dataclass_fields__})

    def bounding_radius(self) -> Tensor:
        """[P] radius of a sphere around `center` containing the primitive."""
        return self.half.norm(dim=-1)

    @property
    def moving(self) -> Tensor:
        """[P] bool, primitives with non-zero velocity."""
        return self.velocity.abs().sum(-1) > 0


class _Builder:
    def __init__(self):
        self.rows = []
        self.next_instance = 0

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def add(self, kind, center, half, label, material, color, yaw=0.0, instance=-1, velocity=(0.0, 0.0, 0.0)):
        self.rows.append((kind, tuple(center), tuple(half), float(yaw), CLASS_ID[label], material, tuple(color), instance, tuple(velocity)))

    def build(self) -> Primitives:
        cols = list(zip(*self.rows))
        f32 = lambda c: torch.tensor(c, dtype=torch.float32)
        i64 = lambda c: torch.tensor(c, dtype=torch.int64)
        return Primitives(
            kind=i64(cols[0]), center=f32(cols[1]), half=f32(cols[2]), yaw=f32(cols[3]), label=i64(cols[4]),
            material=i64(cols[5]), color=f32(cols[6]), instance=i64(cols[7]), velocity=f32(cols[8]),
        )


@dataclass
class World:
    """A generated street: primitives plus the ego trajectory.

    seed:       the generator seed
    prims:      the primitives at t = 0
    speed_mps:  ego speed along the street ('slow_stop': the speed before braking)
    duration_s: length of the drive the world was built for
    ego_motion: 'constant' (steady speed) or 'slow_stop' (`slow_stop_distance`: cruise, brake
                to a stop in a queue, stand still)
    """

    seed: int
    prims: Primitives
    speed_mps: float
    duration_s: float
    sway_amplitude: float = 0.6
    sway_period_s: float = 9.0
    ego_motion: str = "constant"

    def ego_distance(self, t: float) -> float:
        """Metres driven along the street by time t."""
        if self.ego_motion == "slow_stop":
            return slow_stop_distance(t, self.speed_mps, self.duration_s)
        return self.speed_mps * t

    def ego_xy_yaw(self, t: float) -> tuple[float, float, float]:
        """Ego position on the road and heading at time t: straight ahead with a gentle lane sway."""
        if self.ego_motion == "slow_stop":
            # sway as a function of the distance driven, so a standing ego stands still
            s = self.ego_distance(t)
            ws = 2 * math.pi / (self.sway_period_s * max(self.speed_mps, 1e-6))
            y = LANE_Y + self.sway_amplitude * math.sin(ws * s)
            return s, y, math.atan(self.sway_amplitude * ws * math.cos(ws * s))
        w = 2 * math.pi / self.sway_period_s
        x = self.speed_mps * t
        y = LANE_Y + self.sway_amplitude * math.sin(w * t)
        dy = self.sway_amplitude * w * math.cos(w * t)
        return x, y, math.atan2(dy, self.speed_mps)

    def T_world_ego(self, t: float, ego_height: float = 0.0) -> np.ndarray:
        """[4, 4] float64 ego pose (FLU body frame, origin `ego_height` above the road) at t."""
        x, y, yaw = self.ego_xy_yaw(t)
        c, s = math.cos(yaw), math.sin(yaw)
        T = np.eye(4)
        T[:2, :2] = [[c, -s], [s, c]]
        T[:3, 3] = [x, y, ego_height]
        return T


EGO_MOTIONS = ("constant", "slow_stop")
# 'slow_stop': cruise until this fraction of the drive, brake linearly to a stop at the second
SLOW_STOP_PHASES = (0.25, 0.65)


def slow_stop_distance(t: float, v0: float, duration_s: float) -> float:
    """Distance (m) at time t of an ego that cruises at ``v0`` until ``SLOW_STOP_PHASES[0]`` of
    the drive, brakes at constant deceleration to a stop at ``SLOW_STOP_PHASES[1]`` and then
    stands still (a queue at a red light).

        >>> slow_stop_distance(10.0, 3.0, 10.0)  # 3 * 2.5 + 3 * 4 / 2
        13.5
    """
    ta, tb = (f * duration_s for f in SLOW_STOP_PHASES)
    t = min(max(float(t), 0.0), max(duration_s, 0.0)) if duration_s > 0 else 0.0
    if t <= ta:
        return v0 * t
    if t <= tb:
        u = t - ta
        return v0 * ta + v0 * u - v0 * u * u / (2 * (tb - ta))
    return v0 * ta + v0 * (tb - ta) / 2


def ground_label(xy: Tensor) -> Tensor:
    """Occ3D class of the ground plane at world points ``(M, 2)``."""
    road = xy[:, 1].abs() < ROAD_HALF_WIDTH
    return torch.where(road, torch.tensor(CLASS_ID["driveable_surface"]), torch.tensor(CLASS_ID["terrain"]))


def generate_world(seed: int, duration_s: float = 10.0, speed_mps: float = 10.0, margin_m: float = 90.0,
                   ego_motion: str = "constant") -> World:
    """Build the street for a drive of `duration_s` at `speed_mps`, deterministic in all of them.

    The street is laid out over the whole drive from one random stream, so another duration
    gives another street even with the same seed. ``ego_motion='slow_stop'``: the ego brakes
    from `speed_mps` to a stop (`slow_stop_distance`) behind a lead car that keeps creeping
    forward, while trucks and cars pass beside it in the other lane.
    """
    if duration_s < 0 or speed_mps < 0:
        raise ValueError(f"generate_world: duration_s and speed_mps must be >= 0, got {duration_s}, {speed_mps}")
    if ego_motion not in EGO_MOTIONS:
        raise ValueError(f"generate_world: unknown ego_motion '{ego_motion}'; valid: {list(EGO_MOTIONS)}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    b = _Builder()
    travelled = slow_stop_distance(duration_s, speed_mps, duration_s) if ego_motion == "slow_stop" else speed_mps * duration_s
    x0, x1 = -margin_m, travelled + margin_m
    for side in (-1.0, 1.0):
        _sidewalk(b, side, x0, x1)
        _buildings_and_vegetation(b, rng, side, x0, x1)
        _street_furniture(b, rng, side, x0, x1)
        _parked_cars(b, rng, side, x0, x1)
        _pedestrians(b, rng, side, x0, x1, duration_s)
    if ego_motion == "slow_stop":
        _queue_traffic(b, rng, x0, travelled)
    else:
        _traffic(b, rng, x0, x1, speed_mps, duration_s)
    return World(seed=int(seed), prims=b.build(), speed_mps=float(speed_mps), duration_s=float(duration_s),
                 ego_motion=ego_motion)


def _sidewalk(b: _Builder, side: float, x0: float, x1: float, seg: float = 20.0):
    yc = side * (ROAD_HALF_WIDTH + SIDEWALK_OUTER) / 2
    hw = (SIDEWALK_OUTER - ROAD_HALF_WIDTH) / 2
    x = x0
    while x < x1:
        # the slab reaches 0.25 m below the road so voxels centred on the road level are inside it
        b.add(BOX, (x + seg / 2, yc, (KERB_HEIGHT - 0.25) / 2), (seg / 2, hw, (KERB_HEIGHT + 0.25) / 2), "sidewalk", tx.PAVING,
              (0.6, 0.6, 0.6))
        x += seg


_BRICK_COLORS = [(0.62, 0.30, 0.22), (0.70, 0.45, 0.32), (0.55, 0.35, 0.30), (0.75, 0.62, 0.48)]
_PLASTER_COLORS = [(0.85, 0.80, 0.68), (0.78, 0.80, 0.82), (0.86, 0.72, 0.60), (0.70, 0.76, 0.70), (0.9, 0.88, 0.84)]
_CAR_COLORS = [(0.75, 0.1, 0.1), (0.1, 0.2, 0.6), (0.85, 0.85, 0.85), (0.15, 0.15, 0.17), (0.5, 0.5, 0.52),
               (0.2, 0.45, 0.25), (0.9, 0.75, 0.2), (0.35, 0.22, 0.15)]


def _tree(b: _Builder, rng, x: float, y: float, scale: float = 1.0):
    trunk_h = rng.uniform(2.0, 3.2) * scale
    r = rng.uniform(0.14, 0.25)
    b.add(CYLINDER, (x, y, trunk_h / 2), (r, r, trunk_h / 2), "vegetation", tx.BARK, (0.3, 0.2, 0.1))
    cr = rng.uniform(1.4, 2.4) * scale
    green = (rng.uniform(0.12, 0.25), rng.uniform(0.32, 0.48), rng.uniform(0.08, 0.18))
    b.add(ELLIPSOID, (x, y, trunk_h + cr * 0.8), (cr, cr, cr * rng.uniform(0.9, 1.3)), "vegetation", tx.FOLIAGE, green)


def _buildings_and_vegetation(b: _Builder, rng, side: float, x0: float, x1: float):
    x = x0 + rng.uniform(0, 5)
    while x < x1:
        length = rng.uniform(8, 22)
        gap = rng.uniform(0, 8) if rng.random() < 0.6 else 0.0
        setback = rng.uniform(12.5, 15.0)
        depth = rng.uniform(8, 15)
        height = rng.uniform(5, 18)
        style = rng.integers(0, 3)
        if style == 0:
            mat, col = tx.BRICK, _BRICK_COLORS[rng.integers(len(_BRICK_COLORS))]
        elif style == 1:
            mat, col = tx.PLASTER, _PLASTER_COLORS[rng.integers(len(_PLASTER_COLORS))]
        else:
            g = rng.uniform(0.5, 0.72)
            mat, col = tx.CONCRETE, (g, g * 0.98, g * 0.95)
        yc = side * (setback + depth / 2)
        b.add(BOX, (x + length / 2, yc, height / 2), (length / 2, depth / 2, height / 2), "manmade", mat, col)
        x += length
        if gap > 0:
            if gap > 3 and rng.random() < 0.7:
                _tree(b, rng, x + gap / 2, side * rng.uniform(13.5, 16.0), scale=1.2)
            else:  # hedge
                g = (0.15, rng.uniform(0.35, 0.45), 0.12)
                b.add(BOX, (x + gap / 2, side * 13.5, 0.6), (gap / 2, 0.5, 0.6), "vegetation", tx.FOLIAGE, g)
            x += gap
    # roadside trees and bushes on the terrain strip between sidewalk and buildings
    x = x0 + rng.uniform(0, 10)
    while x < x1:
        if rng.random() < 0.7:
            _tree(b, rng, x, side * rng.uniform(10.8, 11.6))
        else:
            r = rng.uniform(0.5, 0.9)
            g = (0.2, rng.uniform(0.38, 0.5), 0.15)
            b.add(ELLIPSOID, (x, side * 11.2, r * 0.6), (r, r, r * 0.8), "vegetation", tx.FOLIAGE, g)
        x += rng.uniform(7, 16)


def _street_furniture(b: _Builder, rng, side: float, x0: float, x1: float):
    x = x0 + rng.uniform(0, 10)
    while x < x1:
        y = side * 9.4
        b.add(CYLINDER, (x, y, 3.0 + KERB_HEIGHT), (0.1, 0.1, 3.0), "manmade", tx.METAL, (0.5, 0.5, 0.5))
        b.add(BOX, (x, y - side * 0.6, 6.05), (0.3, 0.7, 0.08), "manmade", tx.METAL, (0.4, 0.4, 0.4))
        if rng.random() < 0.35:  # a bicycle leaning next to the lamp post
            inst = b.new_instance()
            b.add(BOX, (x + 1.2, side * 9.0, KERB_HEIGHT + 0.5), (0.85, 0.06, 0.5), "bicycle", tx.METAL,
                  tuple(rng.uniform(0.1, 0.9, size=3)), 0.0, inst)
        x += rng.uniform(18, 28)
    # traffic signs and a few barriers / cones
    x = x0 + rng.uniform(0, 30)
    while x < x1:
        y = side * 7.5
        b.add(CYLINDER, (x, y, 1.2 + KERB_HEIGHT), (0.05, 0.05, 1.2), "manmade", tx.METAL, (0.55, 0.55, 0.55))
        b.add(BOX, (x, y, 2.6), (0.04, 0.35, 0.35), "manmade", tx.PLASTER, (0.9, 0.2, 0.15))
        x += rng.uniform(30, 60)
    x = x0 + rng.uniform(10, 40)
    while x < x1:
        kind = rng.integers(0, 2)
        if kind == 0:
            b.add(BOX, (x, side * 7.6, 0.55), (1.0, 0.25, 0.4), "barrier", tx.CONCRETE, (0.8, 0.78, 0.75))
        else:
            for k in range(3):
                b.add(CYLINDER, (x + 1.5 * k, side * 6.6, 0.35), (0.15, 0.15, 0.35), "traffic_cone", tx.CONE, (1, 0.5, 0))
        x += rng.uniform(40, 80)


def _car(b: _Builder, rng, x: float, y: float, yaw: float, vx: float, kind: str = "car"):
    """A vehicle of `kind` ('car' | 'truck' | 'bus' | 'motorcycle') centred at (x, y) on the road."""
    inst = b.new_instance()
    col = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
    v = (vx, 0.0, 0.0)
    d = math.copysign(1.0, math.cos(yaw))
    if kind == "truck":
        L, W = rng.uniform(6.5, 8.0), 2.4
        b.add(BOX, (x, y, 0.2), (L / 2 - 0.3, W / 2 - 0.1, 0.2), "truck", tx.RUBBER, (0.05, 0.05, 0.05), yaw, inst, v)
        cab = 1.8
        b.add(BOX, (x + d * (L / 2 - cab / 2), y, 1.4), (cab / 2, W / 2, 1.0), "truck", tx.CAR_PAINT, col, yaw, inst, v)
        b.add(BOX, (x - d * cab / 2, y, 1.9), ((L - cab) / 2 - 0.1, W / 2, 1.5), "truck", tx.PLASTER, (0.85, 0.85, 0.85), yaw, inst, v)
        return
    if kind == "bus":
        L, W = rng.uniform(10.0, 12.0), 2.5
        b.add(BOX, (x, y, 0.2), (L / 2 - 0.5, W / 2 - 0.1, 0.2), "bus", tx.RUBBER, (0.05, 0.05, 0.05), yaw, inst, v)
        b.add(BOX, (x, y, 1.75), (L / 2, W / 2, 1.35), "bus", tx.CAR_PAINT, col, yaw, inst, v)
        return
    if kind == "motorcycle":
        b.add(BOX, (x, y, 0.55), (1.0, 0.3, 0.5), "motorcycle", tx.CAR_PAINT, col, yaw, inst, v)
        return
    L, W = rng.uniform(4.0, 4.8), rng.uniform(1.75, 1.95)
    H = rng.uniform(0.75, 0.9)
    b.add(BOX, (x, y, 0.15), (L / 2 - 0.25, W / 2 - 0.08, 0.15), "car", tx.RUBBER, (0.05, 0.05, 0.05), yaw, inst, v)
    b.add(BOX, (x, y, 0.3 + H / 2), (L / 2, W / 2, H / 2), "car", tx.CAR_PAINT, col, yaw, inst, v)
    ch = rng.uniform(0.45, 0.6)
    b.add(BOX, (x - 0.1 * L * math.cos(yaw), y - 0.1 * L * math.sin(yaw), 0.3 + H + ch / 2),
          (L * 0.28, W / 2 - 0.08, ch / 2), "car", tx.GLASS, (0.1, 0.1, 0.15), yaw, inst, v)


def _parked_cars(b: _Builder, rng, side: float, x0: float, x1: float):
    x = x0 + rng.uniform(0, 8)
    while x < x1:
        if rng.random() < 0.75:
            yaw = (0.0 if side < 0 else math.pi) + rng.normal(0, 0.03)
            r = rng.random()
            kind = "truck" if r < 0.07 else "motorcycle" if r < 0.12 else "car"
            _car(b, rng, x, side * rng.uniform(5.6, 5.9), yaw, 0.0, kind)
        x += rng.uniform(6.0, 11.0)


def _pedestrians(b: _Builder, rng, side: float, x0: float, x1: float, duration_s: float):
    x = x0 + rng.uniform(0, 20)
    while x < x1:
        inst = b.new_instance()
        v = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6)
        col = tuple(rng.uniform(0.1, 0.9, size=3))
        y = side * rng.uniform(8.0, 9.2)
        b.add(CYLINDER, (x, y, KERB_HEIGHT + 0.85), (0.25, 0.25, 0.85), "pedestrian", tx.CLOTH, col, 0.0, inst, (v, 0.0, 0.0))
        x += rng.uniform(10, 30)


def _traffic(b: _Builder, rng, x0: float, x1: float, speed: float, duration_s: float):
    # ego lane: a lead car (well ahead, about ego speed) and one behind
    if rng.random() < 0.8:
        _car(b, rng, rng.uniform(18, 30), LANE_Y, 0.0, speed + rng.uniform(0.0, 1.0))
    if rng.random() < 0.6:
        _car(b, rng, -rng.uniform(14, 25), LANE_Y, 0.0, speed - rng.uniform(0.0, 1.0))
    # oncoming lane: cars spread so that some pass the ego during the drive
    v = -rng.uniform(8.0, 12.0)
    span = abs(v) * duration_s
    x = x0 + rng.uniform(0, 20)
    while x < x1 + span:
        r = rng.random()
        _car(b, rng, x, -LANE_Y, math.pi, v, "truck" if r < 0.08 else "bus" if r < 0.16 else "car")
        x += rng.uniform(15, 45)


def _queue_traffic(b: _Builder, rng, x0: float, stop_x: float):
    """Traffic around an ego that brakes to a stop at ``stop_x``: a lead car in the ego lane that
    keeps creeping forward (always ahead of the ego: it starts past the stop point), a slow
    truck or bus passing beside the ego in the other lane, and the oncoming stream."""
    lead_v = rng.uniform(0.8, 1.5)
    _car(b, rng, max(stop_x + 7.5, 13.0) + rng.uniform(0.0, 2.0), LANE_Y, 0.0, lead_v)
    slow_x = stop_x + rng.uniform(6.0, 10.0)  # beside the standing ego for several seconds
    _car(b, rng, slow_x, -LANE_Y, math.pi, -rng.uniform(1.5, 3.0), "truck" if rng.random() < 0.5 else "bus")
    # the oncoming stream ahead of the slow vehicle in its direction of travel (never catches it)
    v = -rng.uniform(6.0, 9.0)
    x = slow_x - 14.0 - rng.uniform(0, 6)
    while x > x0:
        _car(b, rng, x, -LANE_Y, math.pi, v, "truck" if rng.random() < 0.1 else "car")
        x -= rng.uniform(15, 40)
