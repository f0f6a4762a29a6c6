"""OccupancyPredictor: occupancy/depth on an analytically known field, grids, batching, the
optimised path against eager, and clear errors on bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from selfocc_core.classes import FREE_LABEL
from selfocc_core.data.sample import Frame
from selfocc_core.geometry.transforms import T_FLU_OPTICAL
from selfocc_core.geometry.voxel_grid import VoxelGridSpec
from selfocc_core.inference.predictor import OccupancyPredictor
from selfocc_core.model import SelfOccModel
from selfocc_core.training.checkpoint import save_checkpoint
from selfocc_core.training.config import load_experiment_config

H, W = 48, 80  # frame images (network input of the test config is 32 x 56)
CAM_H = 1.5  # camera height above the ego origin (m)
GROUND = 0.4  # the initial SDF is z - GROUND (sdf_init: ground)
FX = 40.0


def _config(**model_overrides):
    cfg = load_experiment_config("tiny_synth", [
        "data.image_height=32", "data.image_width=56", "model.tpv_h=16", "model.tpv_w=16",
        f"model.ground_height={GROUND}", "model.init_variance=0.7", "model.num_samples=96",
    ])
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model_overrides))


def make_frame(names=("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"), yaws=(0.0, 55.0, -55.0),
               h=H, w=W, seed=0) -> Frame:
    n = len(names)
    K = torch.tensor([[FX, 0, (w - 1) / 2], [0, FX, (h - 1) / 2], [0, 0, 1.0]]).expand(n, 3, 3).clone()
    T = torch.zeros(n, 4, 4)
    for i, yaw in enumerate(yaws):
        c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        Rz = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        T[i, :3, :3] = Rz @ torch.tensor(T_FLU_OPTICAL[:3, :3], dtype=torch.float32)
        T[i, :3, 3] = torch.tensor([1.0, 0.0, CAM_H])
        T[i, 3, 3] = 1.0
    g = torch.Generator().manual_seed(seed)
    return Frame(images=torch.rand(n, 3, h, w, generator=g), K=K, T_ego_cam=T, T_world_ego=torch.eye(4),
                 timestamp=0.0, camera_names=list(names))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A freshly initialised model: its SDF is z - GROUND plus a ~1 cm residual."""
    torch.manual_seed(0)
    cfg = _config()
    path = tmp_path_factory.mktemp("ckpt") / "init.pt"
    save_checkpoint(path, model=SelfOccModel(cfg.model), config=cfg, step=0, with_rng=False)
    return path


@pytest.fixture(scope="module")
def predictor(ckpt):
    torch.set_num_threads(2)
    return OccupancyPredictor.from_checkpoint(ckpt, device="cpu")


@pytest.fixture(scope="module")
def bumpy_ckpt(tmp_path_factory):
    """A model whose SDF residual is large (metres), so occupancy is not a plane."""
    torch.manual_seed(1)
    cfg = _config()
    m = SelfOccModel(cfg.model)
    with torch.no_grad():
        m.decoder.head.weight[0].mul_(300.0)
    path = tmp_path_factory.mktemp("ckpt") / "bumpy.pt"
    save_checkpoint(path, model=m, config=cfg, step=0, with_rng=False)
    return path


def test_occupancy_of_known_ground_plane(predictor):
    pred = predictor.predict(make_frame())
    grid = predictor.grid  # z centres: -1.6, -0.8, 0.0, 0.8, ...
    assert pred.grid == grid and pred.occupied.shape == grid.shape
    assert pred.occupied.dtype == torch.bool and pred.labels.dtype == torch.uint8
    z = grid.centers()[..., 2]
    expected = z - GROUND <= grid.voxel_size / 4  # layers 0..2 occupied (the road layer too), the rest free
    assert (pred.occupied == expected).all()
    assert (pred.labels[pred.occupied] == 0).all() and (pred.labels[~pred.occupied] == FREE_LABEL).all()
    assert pred.class_names == ("occupied",) and not pred.has_semantics
    assert torch.allclose(pred.sdf, z - GROUND, atol=0.05)
    # confidence is the probability of the reported state: sigmoid(|sdf - voxel/4| * s), s capped at 4 per voxel
    s = min(float(predictor.model.inv_s().detach()), 4.0 / grid.voxel_size)
    assert torch.allclose(pred.confidence, torch.sigmoid((pred.sdf - grid.voxel_size / 4).abs() * s), atol=1e-5)
    assert set(pred.timings) == {"preprocess", "network", "occupancy", "depth", "total"}


def test_resampled_output_grid(predictor):
    out = VoxelGridSpec(-30.0, 30.0, -25.6, 25.6, -2.0, 4.4, 0.4)  # finer, and wider in x than the model box
    pred = predictor.predict(make_frame(), grid=out, with_depth=False)
    assert pred.occupied.shape == out.shape and pred.depth is None
    c = out.centers()
    # between the model's outermost voxel centres (x, y within +-24.8, z in [-1.6, 4.0]) the
    # trilinear read of a linear SDF is exact; beyond them it is clamped (border padding)
    inside = (c[..., 0].abs() < 24.8) & (c[..., 2] >= -1.6) & (c[..., 2] <= 4.0)
    exp = (c[..., 2] <= GROUND)
    assert (pred.occupied[c[..., 0].abs() < 25.6] == exp[c[..., 0].abs() < 25.6]).all()
    assert torch.allclose(pred.sdf[inside], (c[..., 2] - GROUND)[inside], atol=0.05)
    outside = c[..., 0].abs() > 25.6
    assert not pred.occupied[outside].any()  # outside the model's box is free


def test_depth_of_ground_plane_matches_geometry(predictor):
    frame = make_frame()
    pred = predictor.predict(frame)
    assert pred.depth.shape == (3, H, W)
    # A pixel row v below the horizon sees the plane z = GROUND at z-depth (CAM_H - GROUND) * fy / (v - cy).
    cy = (H - 1) / 2
    for v in (40, 44):
        expected = (CAM_H - GROUND) * FX / (v - cy)
        got = pred.depth[0, v, 10:W - 10]
        assert torch.allclose(got, torch.full_like(got, expected), rtol=0.12), (v, expected, got.mean())
    # all cameras see the same plane at the same rows
    assert torch.allclose(pred.depth[1, 44], pred.depth[0, 44], rtol=0.05)


def test_batched_frame_equals_single(predictor):
    from selfocc_core.data.sample import Sample, collate_samples

    f0, f1 = make_frame(seed=0), make_frame(seed=1)
    batch = collate_samples([Sample(frame=f0), Sample(frame=f1)]).frame
    pb = predictor.predict(batch)
    p1 = predictor.predict(f1)
    assert pb.occupied.shape == (2, *predictor.grid.shape) and pb.depth.shape == (2, 3, H, W)
    assert (pb.occupied[1] == p1.occupied).all()
    assert torch.allclose(pb.depth[1], p1.depth, atol=1e-3)


def test_traced_path_matches_eager(bumpy_ckpt):
    eager = OccupancyPredictor.from_checkpoint(bumpy_ckpt, device="cpu")
    fast = OccupancyPredictor.from_checkpoint(bumpy_ckpt, device="cpu", optimize=True)
    frame = make_frame(seed=3)
    a, b = eager.predict(frame), fast.predict(frame)
    frac = a.occupied.float().mean().item()
    assert 0.05 < frac < 0.95  # the field is not trivial
    assert (a.occupied == b.occupied).float().mean() >= 0.99
    assert torch.allclose(a.depth, b.depth, rtol=1e-3, atol=1e-2)
    # a second call reuses the traced graph; another image size traces again
    b2 = fast.predict(make_frame(seed=3))
    assert (b2.occupied == b.occupied).all() and len(fast._optimized) == 1


def test_bf16_matches_fp32(bumpy_ckpt):
    a = OccupancyPredictor.from_checkpoint(bumpy_ckpt, device="cpu").predict(make_frame(seed=4))
    b = OccupancyPredictor.from_checkpoint(bumpy_ckpt, device="cpu", dtype=torch.bfloat16).predict(make_frame(seed=4))
    assert (a.occupied == b.occupied).float().mean() >= 0.97
    assert (a.depth - b.depth).abs().median() < 0.5


@pytest.mark.slow
def test_compiled_path_matches_eager(bumpy_ckpt):
    eager = OccupancyPredictor.from_checkpoint(bumpy_ckpt, device="cpu")
    fast = OccupancyPredictor.from_checkpoint(bumpy_ckpt, device="cpu", optimize="compile")
    frame = make_frame(seed=5)
    a, b = eager.predict(frame), fast.predict(frame)
    assert (a.occupied == b.occupied).float().mean() >= 0.99
    assert torch.allclose(a.depth, b.depth, rtol=1e-3, atol=1e-2)


# ------------------------------------------------------------------------------------- errors
def test_wrong_cameras(predictor):
    with pytest.raises(ValueError, match=r"2 camera\(s\).*trained on 3"):
        predictor.predict(make_frame(names=("CAM_FRONT", "CAM_BACK"), yaws=(0, 180)))
    with pytest.raises(ValueError, match="another order"):
        predictor.predict(make_frame(names=("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT")))


def test_intrinsics_that_do_not_fit_the_images(predictor):
    f = make_frame()
    big = dataclasses.replace(f, K=f.K * torch.tensor([[4.0, 1, 4.0], [1, 4.0, 4.0], [1, 1, 1]]))  # K of a 4x image
    with pytest.raises(ValueError, match="CAM_FRONT: principal point .* does not match the image size"):
        predictor.predict(big)
    K = f.K.clone()
    K[:, 0, 2] = 0.9 * W  # cx near the right edge, cy centred: made for a wider image
    with pytest.raises(ValueError, match="aspect ratio"):
        predictor.predict(dataclasses.replace(f, K=K))


def test_checkpoint_errors(tmp_path, ckpt):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        OccupancyPredictor.from_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt.pt"):
        OccupancyPredictor.from_checkpoint(bad)
    other = _config(embed_dim=16, num_heads=4)
    with pytest.raises(ValueError, match="(?s)another model config.*embed_dim: checkpoint 32 vs config 16"):
        OccupancyPredictor.from_checkpoint(ckpt, device="cpu", expected_config=other)
    # weights of one config stored under another config
    state = torch.load(ckpt, weights_only=True)
    from selfocc_core.config_io import to_dict

    state["config"] = to_dict(other)
    mixed = tmp_path / "mixed.pt"
    torch.save(state, mixed)
    with pytest.raises(ValueError, match="mixed.pt"):
        OccupancyPredictor.from_checkpoint(mixed, device="cpu")


def test_bad_options(ckpt):
    with pytest.raises(ValueError, match="dtype"):
        OccupancyPredictor.from_checkpoint(ckpt, device="cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="optimize"):
        OccupancyPredictor.from_checkpoint(ckpt, device="cpu", optimize="fast")


def test_semantic_head_labels_and_confidence(tmp_path):
    torch.manual_seed(2)
    cfg = _config(num_classes=17)
    m = SelfOccModel(cfg.model)
    with torch.no_grad():
        m.decoder.head.weight[4:].mul_(50.0)  # make the semantic logits decisive
    path = tmp_path / "sem.pt"
    save_checkpoint(path, model=m, config=cfg, step=0, with_rng=False)
    p = OccupancyPredictor.from_checkpoint(path, device="cpu")
    frame = make_frame()
    pred, field_ = p.predict(frame, with_depth=False, return_field=True)
    assert pred.has_semantics and pred.class_names[4] == "car" and len(pred.class_names) == 17
    logits = field_.semantic_volume()[0].float()  # [17, X, Y, Z]
    probs = torch.softmax(logits, 0)
    expected = torch.where(pred.occupied, logits.argmax(0).to(torch.uint8), torch.tensor(FREE_LABEL, dtype=torch.uint8))
    assert (pred.labels == expected).all()
    assert len(torch.unique(pred.labels[pred.occupied])) > 1
    s = min(float(p.model.inv_s().detach()), 4.0 / p.grid.voxel_size)
    p_state = torch.sigmoid((pred.sdf - p.grid.voxel_size / 4).abs() * s)
    assert torch.allclose(pred.confidence[pred.occupied], (p_state * probs.max(0).values)[pred.occupied], atol=1e-5)
    assert torch.allclose(pred.confidence[~pred.occupied], p_state[~pred.occupied], atol=1e-5)


def test_network_input_size_sets_the_resize_and_the_depth_stride():
    """A checkpoint trained with photometric losses on larger images than its network input
    (model.input_height/width) is fed images at the network size, its depth rays keep the
    training ray density on them, and it predicts what the full-size path predicts."""
    cfg = _config(input_height=32, input_width=56, ray_stride=8)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_height=128, image_width=224))
    torch.manual_seed(0)
    model = SelfOccModel(cfg.model)
    p = OccupancyPredictor(model, cfg, device="cpu")
    assert p.input_size == (32, 56)
    assert p.depth_stride == 2  # 8 px of the 224-wide loss images = 2 px of the 56-wide input
    frame = make_frame()
    out = p.predict(frame)
    full = OccupancyPredictor(model, dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, input_height=0, input_width=0), data=dataclasses.replace(cfg.data, image_height=32, image_width=56)),
        device="cpu", depth_stride=2)
    ref = full.predict(frame)
    assert torch.allclose(torch.as_tensor(out.sdf), torch.as_tensor(ref.sdf), atol=1e-5)
    assert torch.allclose(torch.as_tensor(out.depth), torch.as_tensor(ref.depth), atol=1e-4)
