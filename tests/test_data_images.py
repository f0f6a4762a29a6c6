"""Image loading/resizing and the DataConfig contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selfocc_core.config_io import ConfigError, from_dict, to_dict
from selfocc_core.data.config import DataConfig
from selfocc_core.data.images import load_image, load_resized, resize_image
from selfocc_core.data.lidar_depth import lidar_depth_maps
from selfocc_core.geometry import project


def test_load_rgb_and_grayscale(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2] = [255, 0, 51]
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = load_image(tmp_path / "c.png")
    assert img.shape == (3, 4, 6) and img.dtype == torch.float32
    assert torch.allclose(img[:, 1, 2], torch.tensor([1.0, 0.0, 0.2]))
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.shape == (3, 4, 6)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert img[0, 3, 5].item() == pytest.approx(230 / 255)


def test_missing_and_unreadable_images_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(tmp_path / "broken.jpg")
    # truncated file: valid header, missing data
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 100).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="trunc.jpg"):
        load_image(tmp_path / "trunc.jpg")


def test_resize_updates_K_so_points_land_on_the_same_content(tmp_path):
    """A bright square at a projected point stays at the projection with the new K."""
    K = torch.tensor([[400.0, 0, 320], [0, 400.0, 240], [0, 0, 1]], dtype=torch.float64)
    p = torch.tensor([[1.0, -0.5, 5.0]], dtype=torch.float64)
    u, v = project(p, K)[0][0]
    img = np.zeros((480, 640, 3), np.uint8)
    img[int(v) - 8: int(v) + 8, int(u) - 8: int(u) + 8] = 255
    Image.fromarray(img).save(tmp_path / "sq.png")
    small, K2 = load_resized(tmp_path / "sq.png", K.numpy(), 120, 200)
    assert small.shape == (3, 120, 200) and K2.dtype == torch.float32
    assert K2[0, 0].item() == pytest.approx(400 * 200 / 640) and K2[1, 1].item() == pytest.approx(100.0)
    u2, v2 = project(p.float(), K2)[0][0]
    # intensity-weighted centroid of the square in the small image
    w = small[0]
    vv, uu = torch.meshgrid(torch.arange(120.0), torch.arange(200.0), indexing="ij")
    cu, cv = (w * uu).sum() / w.sum(), (w * vv).sum() / w.sum()
    # the square spans pixels [u-8, u+8) whose centre is u - 0.5 in the original
    cu_exp = (u - 0.5 + 0.5) * 200 / 640 - 0.5
    cv_exp = (v - 0.5 + 0.5) * 120 / 480 - 0.5
    assert abs(cu.item() - cu_exp.item()) < 0.05 and abs(cv.item() - cv_exp.item()) < 0.05
    assert abs(u2.item() - cu.item()) < 0.2 and abs(v2.item() - cv.item()) < 0.2


def test_resize_image_shapes_and_identity():
    img = torch.rand(2, 3, 10, 20)
    K = torch.eye(3).expand(2, 3, 3)
    out, K2 = resize_image(img, K, 5, 10)
    assert out.shape == (2, 3, 5, 10) and K2.shape == (2, 3, 3)
    same, K3 = resize_image(img[0], K[0], 10, 20)
    assert torch.equal(same, img[0]) and torch.equal(K3, K[0])
    with pytest.raises(ValueError, match="image must be"):
        resize_image(torch.rand(10, 20), K[0], 5, 5)


def test_lidar_depth_maps_zbuffer():
    K = torch.tensor([[[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]]])
    T = torch.eye(4)[None]
    pts = torch.tensor([[1.0, 0.5, 10.0], [2.0, 1.0, 20.0], [0.0, 0.0, 3.0], [0.0, 0.0, -3.0], [0.0, 0.0, 90.0]])
    d = lidar_depth_maps(pts, K, T, 80, 100)
    assert d.shape == (1, 80, 100)
    assert d[0, 45, 60].item() == 10.0  # nearer of two points on the same pixel
    assert d[0, 40, 50].item() == 3.0
    assert (d > 0).sum().item() == 2  # behind the camera and beyond 80 m are dropped


def test_data_config_yaml_round_trip_and_validation():
    cfg = from_dict(DataConfig, {"image_height": 96, "cameras": ["CAM_FRONT"], "context_offsets": [-2, -1, 1]})
    assert cfg.image_height == 96 and cfg.cameras == ["CAM_FRONT"] and cfg.image_width == 400
    assert from_dict(DataConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(DataConfig, {"image_hieght": 3})
    with pytest.raises(ConfigError, match="context_offsets"):
        from_dict(DataConfig, {"context_offsets": [0, 1]})
    with pytest.raises(ConfigError, match="min_ego_distance"):
        from_dict(DataConfig, {"min_ego_distance": 5.0, "max_ego_distance": 1.0})
    for name in DataConfig.__dataclass_fields__:  # every field is documented in the source
        import inspect

        src = inspect.getsource(DataConfig)
        after = src.split(f"    {name}:", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""'), name
