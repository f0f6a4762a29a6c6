"""Pictures: colour maps, bird's-eye and perspective voxel renders, panels, videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selfocc_core.classes import CLASS_ID, FREE_LABEL, OCC3D_COLORS
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.viz import (
    ViewCamera,
    apply_colormap,
    chase_camera,
    class_legend,
    colorize_depth,
    depth_legend,
    hstack,
    raycast_voxels,
    render_bev,
    render_perspective,
    save_png,
    vstack,
    write_video,
)
from selfocc_core.viz.colormaps import _TABLES
from selfocc_core.viz.voxels import BACKGROUND

GRID = VoxelGridSpec(0.0, 4.0, 0.0, 3.0, 0.0, 2.0, 1.0)  # 4 x 3 x 2 voxels of 1 m
CAR, ROAD = CLASS_ID["car"], CLASS_ID["driveable_surface"]


def test_colormap_endpoints_and_interpolation():
    t = np.asarray(_TABLES["turbo"], dtype=float)
    out = apply_colormap(np.array([0.0, 1.0, 0.5 / 16, np.nan]), "turbo", invalid_color=(1, 2, 3))
    assert out[0].tolist() == t[0].tolist()
    assert out[1].tolist() == t[-1].tolist()
    assert out[2].tolist() == np.round((t[0] + t[1]) / 2).tolist()  # halfway between anchors 0 and 1
    assert out[3].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown colormap"):
        apply_colormap(np.zeros(2), "jet")


def test_colorize_depth_near_is_red_far_is_blue_and_zero_is_invalid():
    rgb = colorize_depth(torch.tensor([[0.0, 1e-3, 80.0]]), max_depth=80.0)
    t = np.asarray(_TABLES["turbo"])
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[0, 1].tolist() == t[-1].tolist()  # near: dark red end of turbo
    assert rgb[0, 2].tolist() == t[0].tolist()  # far: dark blue end


def test_bev_shows_top_voxel_with_height_shading_and_map_orientation():
    lab = np.full(GRID.shape, FREE_LABEL, dtype=np.uint8)
    lab[3, 0, 0] = ROAD  # x forward-most, y right-most, low
    lab[0, 2, 0] = ROAD
    lab[0, 2, 1] = CAR  # car on top of road in column (0, 2)
    img = render_bev(lab, GRID, scale=2, ego_marker=False)
    assert img.shape == (8, 6, 3)
    # +x is up, +y is left: voxel (i, j) lands at row (X-1-i), column (Y-1-j)
    road = np.round(OCC3D_COLORS[ROAD] * (0.45 + 0.55 * 1 / 2)).astype(np.uint8)
    car = OCC3D_COLORS[CAR]  # top layer: full brightness
    assert img[0, 4].tolist() == road.tolist() and img[1, 5].tolist() == road.tolist()
    assert img[6, 0].tolist() == car.tolist()
    assert img[4, 2].tolist() == list(BACKGROUND)  # free column
    heights = render_bev(lab, GRID, scale=1, color_by="height", ego_marker=False)
    assert heights[3, 0].tolist() != heights[0, 2].tolist()  # layer 1 vs layer 0
    with pytest.raises(ValueError, match="do not match grid"):
        render_bev(lab[:2], GRID)


def test_raycast_hits_first_voxel_at_its_face():
    occ = torch.zeros(GRID.shape, dtype=torch.bool)
    occ[2, 1, 0] = True
    occ[3, 1, 0] = True  # behind the first one: hidden
    origins = torch.tensor([[-1.0, 1.5, 0.5], [-1.0, 2.5, 0.5], [0.5, 1.5, 5.0], [1.5, -2.0, 0.5]])
    dirs = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, -1.0], [0.6, 0.8, 0]])
    hit, ijk, t, axis, frac = raycast_voxels(occ, GRID, origins, dirs)
    assert hit.tolist() == [True, False, False, True]
    assert ijk[0].tolist() == [2, 1, 0] and t[0].item() == pytest.approx(3.0) and axis[0].item() == 0
    # diagonal ray from (1.5, -2): enters the grid (y = 0) at t = 2.5, crosses x = 3 at t = 2.5 (corner),
    # y = 1 at t = 3.75: x = 1.5 + 0.6*3.75 = 3.75, y = 1.0 -> enters voxel (3, 1, 0) through a y-face
    assert ijk[3].tolist() == [3, 1, 0] and t[3].item() == pytest.approx(3.75) and axis[3].item() == 1
    assert frac[0].tolist() == pytest.approx([0.0, 0.5, 0.5], abs=1e-4)


def test_perspective_zbuffer_from_above():
    lab = np.full(GRID.shape, FREE_LABEL, dtype=np.uint8)
    lab[:, :, 0] = ROAD
    lab[1, 1, 1] = CAR  # one car voxel on the road
    # camera 10 m above (2, 1.5) looking straight down: optical z = -ego z, x = -ego y, y = -ego x
    T = torch.eye(4)
    T[:3, :3] = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    T[:3, 3] = torch.tensor([2.0, 1.5, 10.0])
    K = torch.tensor([[40.0, 0, 20.0], [0, 40.0, 20.0], [0, 0, 1]])
    img, depth = render_perspective(lab, GRID, ViewCamera(K, T, 41, 41), edges=False, return_depth=True)
    # ego x = 2 - y_cam, ego y = 1.5 - x_cam with (x_cam, y_cam) = ((u, v) - 20) / 40 * depth.
    # (v=22, u=20) at depth 8 -> ego (1.6, 1.5): the car voxel (1, 1, 1), top face z = 2.
    assert depth[22, 20] == pytest.approx(8.0, abs=1e-4)
    # (v=16, u=26) at depth 9 -> ego (2.9, 0.15): road voxel (2, 0, 0), top face z = 1.
    assert depth[16, 26] == pytest.approx(9.0, abs=1e-4)
    assert np.isinf(depth[0, 0])  # outside the grid's footprint: sky
    car_px, road_px = img[22, 20].astype(int), img[16, 26].astype(int)
    # both faces point straight up, so both have the same shading factor
    assert car_px.argmax() == 2 and road_px[0] > road_px[1]
    ratio = car_px[2] / OCC3D_COLORS[CAR][2]
    assert road_px[0] / OCC3D_COLORS[ROAD][0] == pytest.approx(ratio, rel=0.05)


def test_chase_camera_looks_forward_and_down():
    cam = chase_camera(VoxelGridSpec(), 64, 40)
    fwd = cam.T_ego_cam[:3, 2]
    assert fwd[0] > 0 and fwd[2] < 0 and abs(fwd[1]) < 1e-6
    assert cam.T_ego_cam[0, 3] < 0 and cam.T_ego_cam[2, 3] > 0  # behind and above
    assert torch.allclose(cam.T_ego_cam[:3, :3] @ cam.T_ego_cam[:3, :3].T, torch.eye(3), atol=1e-6)


def test_panels_legends_and_png(tmp_path):
    a = np.zeros((20, 30, 3), np.uint8)
    b = np.full((40, 40, 3), 200, np.uint8)
    row = hstack([a, b], ["left", "right"], height=40, pad=4)
    assert row.shape[1] == 60 + 40 + 3 * 4  # a resized to 40 x 60
    leg = depth_legend(120, 50.0)
    assert leg.shape[0] == 120 and leg.std() > 0
    cl = class_legend([CAR, ROAD], width=400)
    assert (cl == OCC3D_COLORS[CAR]).all(axis=-1).any()  # the car swatch is drawn
    fig = vstack([row, leg, cl])
    assert fig.shape[1] == 400
    save_png(fig, tmp_path / "f.png")
    assert np.asarray(Image.open(tmp_path / "f.png")).shape == fig.shape


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_write_video_round_trip(tmp_path, suffix):
    import imageio.v2 as imageio

    frames = [np.full((32, 48, 3), v, np.uint8) for v in (0, 120, 250)]
    out = write_video(frames, tmp_path / f"clip{suffix}", fps=5)
    assert out.exists() and out.stat().st_size > 0
    if out.suffix == ".gif":
        got = imageio.mimread(out)
        assert len(got) == 3 and got[1].shape[:2] == (32, 48)
    else:
        r = imageio.get_reader(out)
        assert r.count_frames() == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_video_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    import selfocc_core.viz.video as video

    monkeypatch.setattr(video, "mp4_available", lambda: False)
    frames = [np.full((10, 12, 3), v, np.uint8) for v in (10, 200)]
    out = video.write_video(frames, tmp_path / "clip.mp4")
    assert out == tmp_path / "clip.gif" and out.exists() and not (tmp_path / "clip.mp4").exists()
    with pytest.raises(ValueError, match="unsupported video suffix"):
        video.write_video(frames, tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="no frames"):
        video.write_video([], tmp_path / "x.gif")
