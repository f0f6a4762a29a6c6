"""Synthetic world: determinism, analytic ray casting, GT consistency, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfocc_core.classes import CLASS_ID, FREE_LABEL
from selfocc_core.geometry.camera import backproject
from selfocc_core.geometry.transforms import invert_transform, transform_points
from selfocc_core.synth import textures as tx
from selfocc_core.synth.occupancy import _inside
from selfocc_core.synth.raycast import GROUND, NO_HIT, intersect
from selfocc_core.synth.rigs import get_rig
from selfocc_core.synth.sequence import SyntheticSequence
from selfocc_core.synth.world import BOX, CYLINDER, ELLIPSOID, Primitives, generate_world


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _prims(rows):
    """rows: (kind, center, half, yaw)"""
    P = len(rows)
    return Primitives(
        kind=torch.tensor([r[0] for r in rows]), center=torch.tensor([r[1] for r in rows], dtype=torch.float32),
        half=torch.tensor([r[2] for r in rows], dtype=torch.float32), yaw=torch.tensor([r[3] for r in rows], dtype=torch.float32),
        label=torch.full((P,), CLASS_ID["car"]), material=torch.zeros(P, dtype=torch.int64), color=torch.ones(P, 3),
        instance=torch.arange(P), velocity=torch.zeros(P, 3))


@pytest.mark.parametrize(
    "row, expected",
    [
        ((BOX, (10.0, 0.0, 1.0), (1.0, 1.0, 1.0), 0.0), 9.0),
        ((BOX, (10.0, 0.0, 1.0), (1.0, 1.0, 1.0), math.pi / 4), 10.0 - math.sqrt(2.0)),  # corner first
        ((CYLINDER, (5.0, 0.0, 1.0), (0.5, 0.5, 2.0), 0.3), 4.5),
        ((ELLIPSOID, (10.0, 0.0, 1.0), (2.0, 1.0, 1.0), 0.0), 8.0),
        ((ELLIPSOID, (10.0, 0.0, 1.0), (1.0, 2.0, 1.0), math.pi / 2), 8.0),  # yawed: long axis along x
    ],
)
def test_ray_primitive_distances_hand_computed(row, expected):
    prims = _prims([row])
    o = torch.tensor([[0.0, 0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    t, idx = intersect(prims, o, d)
    assert t.item() == pytest.approx(expected, abs=1e-4) and idx.item() == 0


def test_ground_cylinder_cap_and_miss():
    prims = _prims([(CYLINDER, (0.0, 0.0, 1.0), (0.5, 0.5, 1.0), 0.0)])  # top cap at z = 2
    o = torch.tensor([[0.0, 0.0, 5.0], [3.0, 0.0, 1.5], [3.0, 0.0, 1.5], [3.0, 0.0, 1.5]])
    s = 1 / math.sqrt(2.0)
    d = torch.tensor([[0.0, 0.0, -1.0], [s, 0.0, -s], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    t, idx = intersect(prims, o, d)
    assert t[0].item() == pytest.approx(3.0) and idx[0] == 0  # cap
    assert t[1].item() == pytest.approx(1.5 * math.sqrt(2.0), abs=1e-5) and idx[1] == GROUND
    assert math.isinf(t[2].item()) and idx[2] == NO_HIT  # up into the sky
    assert t[3].item() == pytest.approx(2.5) and idx[3] == 0  # side


def test_world_is_deterministic_by_seed():
    a, b, c = generate_world(7, 3.0), generate_world(7, 3.0), generate_world(8, 3.0)
    for f in ("kind", "center", "half", "yaw", "label", "material", "color", "velocity"):
        assert torch.equal(getattr(a.prims, f), getattr(b.prims, f))
    assert len(a.prims) != len(c.prims) or not torch.equal(a.prims.center, c.prims.center)
    s1, s2, s3 = SyntheticSequence(7, 2), SyntheticSequence(7, 2), SyntheticSequence(8, 2)
    r1, r2, r3 = s1.render(1, 24, 40), s2.render(1, 24, 40), s3.render(1, 24, 40)
    assert torch.equal(r1.rgb, r2.rgb) and torch.equal(r1.depth, r2.depth)
    assert (r1.rgb - r3.rgb).abs().mean() > 0.02
    np.testing.assert_array_equal(s1.T_world_ego(1), s3.T_world_ego(1))  # same trajectory, different world


def test_world_has_all_street_elements():
    labels = set(generate_world(0, 5.0).prims.label.tolist())
    for name in ("sidewalk", "manmade", "vegetation", "car", "pedestrian"):
        assert CLASS_ID[name] in labels
    w = generate_world(0, 5.0)
    assert w.prims.moving.any() and (~w.prims.moving).any()


def test_textures_have_detail_and_are_pure_functions_of_position():
    p = torch.rand(2000, 3) * 10
    fp = torch.full((2000,), 0.01)
    axis = torch.full((2000,), 2)
    half = torch.ones(2000, 3)
    for mat in (tx.ASPHALT, tx.GRASS, tx.PAVING, tx.BRICK, tx.FOLIAGE):
        c1 = tx.shade_material(mat, p, axis, half, torch.full((2000, 3), 0.5), fp, 3)
        c2 = tx.shade_material(mat, p.flip(0), axis, half, torch.full((2000, 3), 0.5), fp, 3).flip(0)
        assert torch.allclose(c1, c2)  # same point, same colour, whatever the batch
        assert c1.mean(-1).std() > 0.02, f"material {mat} is nearly flat"
    # anti-aliasing: a huge footprint fades the fine noise towards its mean
    g_far = tx.fbm(p, 4.0, 4, torch.full((2000,), 10.0), 0)
    assert g_far.abs().max() < 1e-6


def test_rendered_depth_and_semantics_match_the_primitives():
    seq = SyntheticSequence(2, 1)
    H, W = 36, 64
    out = seq.render(0, H, W)
    K = seq.intrinsics(H, W)
    T_world_cam = torch.tensor(np.stack([seq.T_world_ego(0) @ c.T_ego_cam for c in seq.rig.cameras]), dtype=torch.float32)
    prims = seq.world.prims.at(0.0)
    checked = 0
    for n in range(len(seq.rig.cameras)):
        pts_cam = backproject(out.depth[n], K[n]).reshape(-1, 3)
        lab = out.semantics[n].reshape(-1)
        hit = out.depth[n].reshape(-1) > 0
        p = transform_points(T_world_cam[n], pts_cam)
        ray = p - T_world_cam[n, :3, 3]
        ray = ray / ray.norm(dim=-1, keepdim=True)
        ahead, behind = p + 0.02 * ray, p - 0.02 * ray

        sel = torch.nonzero(hit).squeeze(-1)[::5]
        # in front of the surface: free (above the road, outside every primitive)
        free = behind[sel][:, 2] > 0.0
        for i in range(len(prims)):
            free &= ~_inside(prims, i, behind[sel])
        assert free.all(), "space in front of a hit must be free"
        # behind the surface: inside a primitive of the rendered class (or below the road)
        occ = ahead[sel][:, 2] < 0.0
        for i in range(len(prims)):
            occ |= _inside(prims, i, ahead[sel]) & (lab[sel] == prims.label[i])
        assert occ.float().mean() > 0.99
        sky = ~hit
        assert (out.semantics[n].reshape(-1)[sky] == FREE_LABEL).all()
        checked += sel.numel()
    assert checked > 500


def test_occupancy_labels_cars_buildings_and_free_space():
    seq = SyntheticSequence(4, 1)
    gt = seq.ground_truth(0)
    grid = seq.rig.grid
    T_ego_world = invert_transform(torch.tensor(seq.T_world_ego(0), dtype=torch.float32))
    prims = seq.world.prims
    sem = gt.semantics
    n_cars = 0
    for i in torch.nonzero(prims.label == CLASS_ID["car"]).squeeze(-1).tolist():
        if prims.material[i] != tx.CAR_PAINT:
            continue  # the body box of each car
        c = transform_points(T_ego_world, prims.center[i][None])
        ijk, ok = grid.metric_to_index(c)
        if ok.item():
            assert sem[tuple(ijk[0].tolist())] == CLASS_ID["car"]
            n_cars += 1
    assert n_cars >= 3
    # 3 m above the ego: free; the road under the ego: driveable surface
    for xyz, expected in (((0.0, 0.0, 3.0), FREE_LABEL), ((0.0, 0.0, 0.0), CLASS_ID["driveable_surface"])):
        ijk, _ = grid.metric_to_index(torch.tensor([xyz]))
        assert sem[tuple(ijk[0].tolist())] == expected
    assert sem.dtype == torch.uint8 and tuple(sem.shape) == (200, 200, 16)
    # visibility: the inside of buildings is never seen, the air in front of the cameras is
    interior = _erode(_erode(sem == CLASS_ID["manmade"]))  # two voxels deep inside buildings
    assert interior.sum() > 1000 and not (gt.mask_camera & interior).any()
    ijk, _ = grid.metric_to_index(torch.tensor([[8.0, -0.5, 1.5]]))  # 8 m ahead at camera height
    assert gt.mask_camera[tuple(ijk[0].tolist())] and gt.mask_lidar[tuple(ijk[0].tolist())]


def _erode(x: torch.Tensor) -> torch.Tensor:
    """Voxels whose 6 neighbours are all set (grid border excluded)."""
    y = torch.zeros_like(x)
    c = x[1:-1, 1:-1, 1:-1]
    y[1:-1, 1:-1, 1:-1] = (c & x[2:, 1:-1, 1:-1] & x[:-2, 1:-1, 1:-1] & x[1:-1, 2:, 1:-1] & x[1:-1, :-2, 1:-1]
                           & x[1:-1, 1:-1, 2:] & x[1:-1, 1:-1, :-2])
    return y


def test_kitti_rig_and_grid():
    rig = get_rig("kitti")
    assert rig.camera_names == ["image_2"] and rig.grid.shape == (256, 256, 32)
    cam = rig.cameras[0]
    # image_2 looks forward: its optical axis is the ego x axis; it sits ~0.27 m ahead of and 0.08 m below the LiDAR
    assert cam.T_ego_cam[:3, 2] == pytest.approx([1.0, 0.0, 0.0], abs=0.02)
    assert cam.T_ego_cam[0, 3] == pytest.approx(0.27, abs=0.03) and cam.T_ego_cam[2, 3] == pytest.approx(-0.08, abs=0.03)
    seq = SyntheticSequence(0, 1, "kitti")
    assert seq.T_world_ego(0)[2, 3] == pytest.approx(1.73)
    gt = seq.ground_truth(0)
    ijk, _ = rig.grid.metric_to_index(torch.tensor([[10.0, 0.0, -1.70]]))  # road surface 10 m ahead
    assert gt.semantics[tuple(ijk[0].tolist())] == CLASS_ID["driveable_surface"]


def test_nuscenes_rig_matches_the_real_calibration(real_data_dir):
    import pickle

    info = pickle.load(open(real_data_dir / "nuscenes_keyframe" / "n015-2018-07-24-11-22-45+0800.pkl", "rb"))["data_list"][0]
    rig = get_rig("nuscenes")
    assert rig.camera_names == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
    for cam in rig.cameras:
        np.testing.assert_allclose(cam.K, np.asarray(info["images"][cam.name]["cam2img"]), atol=1e-6)
        np.testing.assert_allclose(cam.T_ego_cam, np.asarray(info["images"][cam.name]["cam2ego"]), atol=1e-6)
    K = rig.cameras[0].K_at(450, 800)
    assert K[0, 0].item() == pytest.approx(1266.4172 / 2, rel=1e-5)


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="unknown rig 'waymo'"):
        get_rig("waymo")
    with pytest.raises(ValueError, match="unknown camera"):
        get_rig("nuscenes", ["CAM_FRONT", "CAM_TOP"])
    with pytest.raises(ValueError, match="positive"):
        get_rig("nuscenes").cameras[0].K_at(-1, 100)
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticSequence(0, 0)
    seq = SyntheticSequence(0, 2)
    with pytest.raises(ValueError, match="image size"):
        seq.render(0, 0, 10)
    with pytest.raises(IndexError, match="out of range"):
        seq.render(5, 10, 10)
