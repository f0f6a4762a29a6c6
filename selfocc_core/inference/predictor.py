"""`OccupancyPredictor`: a trained checkpoint -> occupancy, semantics, confidence and depth.

The stable entry point for the ROS node, `selfocc eval`, `selfocc demo` and `selfocc bench`:

    predictor = OccupancyPredictor.from_checkpoint("runs/x/last.pt")   # cuda if available
    pred = predictor.predict(frame)          # Frame: images [N, 3, H, W] (or batched [B, N, ...])
    pred.occupied [X, Y, Z] bool, pred.labels [X, Y, Z] uint8 (17 = free),
    pred.confidence [X, Y, Z], pred.sdf [X, Y, Z], pred.depth [N, H, W] metres, pred.timings (ms)

Steps of `predict`:
  1. check the frame against the checkpoint (cameras, intrinsics that fit the images);
  2. resize images to the network input of the checkpoint's DataConfig (K scaled to match),
     exactly what the dataset readers did for training;
  3. images -> SceneField (eager, or the optimised traced / compiled network);
  4. occupancy = SDF at the voxel centre <= a quarter voxel (`occupancy_from_sdf`, the rule every
     score of the project uses) on the output grid (the model's grid by default; otherwise the SDF
     and semantic logits are read by trilinear sampling at the output voxel centres);
     labels = argmax of the semantic head for occupied voxels (class 0 'occupied' without a
     semantic head), FREE_LABEL elsewhere; confidence = probability of the reported state:
     sigmoid(|sdf - voxel/4| * s) with the NeuS sharpness s (capped at 4 per voxel), times the softmax
     probability of the label for occupied voxels when there are semantics;
  5. per-camera depth: NeuS-rendered on the ray grid of the network input at `depth_stride`,
     bilinearly upsampled to the frame's image size.

Outputs are CPU tensors. All of it is inference-only (no gradients).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from selfocc_core.classes import FREE_LABEL, OCC3D_CLASSES
from selfocc_core.data.images import resize_image
from selfocc_core.data.sample import Frame
from selfocc_core.geometry.voxel_grid import OCCUPANCY_TOLERANCE, VoxelGridSpec, occupancy_from_sdf

OPTIMIZE_MODES = ("trace", "compile", "cudagraph")


@dataclass
class OccupancyPrediction:
    """What the predictor returns for one frame (a batched frame adds a leading B to every tensor).

    grid:         VoxelGridSpec of the arrays below (ego frame of the input frame)
    occupied:     [X, Y, Z] bool, SDF <= voxel_size / 4 (`occupancy_from_sdf`)
    labels:       [X, Y, Z] uint8 class ids (`class_names`), FREE_LABEL (17) where free
    confidence:   [X, Y, Z] float32 in [0, 1], probability of the reported state (and label)
    sdf:          [X, Y, Z] float32 metres (negative inside)
    depth:        [N, H, W] float32 z-depth in metres per camera at the frame's image size, or None
    camera_names: N names, as in the frame
    class_names:  names of the label ids (Occ3D classes, or ("occupied",) without a semantic head)
    timings:      milliseconds per stage: preprocess, network, occupancy, depth, total
    """

    grid: VoxelGridSpec
    occupied: Tensor
    labels: Tensor
    confidence: Tensor
    sdf: Tensor
    depth: Optional[Tensor]
    camera_names: list[str]
    class_names: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def has_semantics(self) -> bool:
        return len(self.class_names) > 1


class _TraceableNet(nn.Module):
    """images/K/T tensors -> field volumes (sdf, rgb, semantics) as a tuple, so the whole
    image -> lifting -> decoding path can be traced or compiled as one graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, K: Tensor, T_ego_cam: Tensor):
        B, N = images.shape[:2]
        frame = Frame(images=images, K=K, T_ego_cam=T_ego_cam,
                      T_world_ego=torch.eye(4, device=images.device).expand(B, 4, 4),
                      timestamp=torch.zeros(B), camera_names=[f"cam{i}" for i in range(N)])
        f = self.model(frame)
        sem = f.semantic_volume()
        return (f._sdf, f._rgb) if sem is None else (f._sdf, f._rgb, sem)


class OccupancyPredictor:
    """See the module docstring. Build with :meth:`from_checkpoint` (or directly from a model)."""

    def __init__(self, model: nn.Module, config, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, optimize: bool | str = False,
                 depth_stride: Optional[int] = None, num_depth_samples: Optional[int] = None,
                 ray_chunk: int = 65536, checkpoint_path: Optional[str | Path] = None):
        """
        Args:
            model: a SelfOccModel; config: its ExperimentConfig (model + data sections are used).
            dtype: torch.float32, or torch.bfloat16 to run the network under bf16 autocast.
            optimize: False (eager), True / "trace" (torch.jit.trace + freeze of the network, cheap
                to build, fixed shapes: re-traced per input shape), "compile" (torch.compile;
                slow to build on CPU) or "cudagraph" (torch.compile(mode="reduce-overhead"): on
                CUDA the fixed-shape network is replayed as one CUDA graph, so a small model is
                no longer bound by kernel launches; on CPU it is plain "compile"). With
                dtype=torch.bfloat16 the network runs under bf16 autocast in every mode.
            depth_stride: pixels per rendered depth ray on the network input (default: the
                model's ray_stride, scaled to the network input when training used larger
                loss images than the network, ``model.input_width``).
            num_depth_samples: NeuS samples per ray (default: model's).
            ray_chunk: rays rendered at once (bounds memory).
        """
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"OccupancyPredictor: dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        if optimize is True:
            optimize = "trace"
        if optimize not in (False, None, *OPTIMIZE_MODES):
            raise ValueError(f"OccupancyPredictor: optimize must be False, True or one of {OPTIMIZE_MODES}, got {optimize!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.dtype = dtype
        self.optimize = optimize or None
        if depth_stride is None and config.model.input_width:
            # the training ray stride counts pixels of the (larger) loss images
            depth_stride = max(1, round(config.model.ray_stride * config.model.input_width / config.data.image_width))
        self.depth_stride = int(depth_stride or config.model.ray_stride)
        self.num_depth_samples = num_depth_samples
        self.ray_chunk = int(ray_chunk)
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self._optimized: dict[tuple, nn.Module] = {}
        n_cls = config.model.num_classes
        self.class_names: tuple[str, ...] = (
            tuple(OCC3D_CLASSES[:n_cls]) if 0 < n_cls <= FREE_LABEL else
            tuple(f"class_{i}" for i in range(n_cls)) if n_cls else ("occupied",)
        )

    # ------------------------------------------------------------------------------- building
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype = torch.float32, optimize: bool | str = False,
                        expected_config=None, **kwargs) -> "OccupancyPredictor":
        """Load a `selfocc train` checkpoint.

        device defaults to 'cuda' when available, else 'cpu'. ``expected_config`` (an
        ExperimentConfig or preset name) makes a checkpoint trained with another model config an
        error. Missing file -> FileNotFoundError; corrupt/foreign file or weights that do not fit
        the stored config -> ValueError naming the file.
        """
        from selfocc_core.training.checkpoint import build_model_from_checkpoint, config_differences, load_checkpoint

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = Path(path)
        if expected_config is not None:
            if isinstance(expected_config, (str, Path)):
                from selfocc_core.training.config import load_experiment_config

                expected_config = load_experiment_config(expected_config)
            state = load_checkpoint(path)
            diffs = config_differences(state["config"], expected_config, "model")
            if diffs:
                raise ValueError(f"{path}: checkpoint was trained with another model config:\n  " + "\n  ".join(diffs))
        try:
            model, cfg = build_model_from_checkpoint(path, device="cpu")
        except RuntimeError as e:  # load_state_dict: tensor shapes that do not fit the stored config
            first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
            raise ValueError(f"{path}: weights do not fit the model of its stored config ({first})") from e
        return cls(model, cfg, device=device, dtype=dtype, optimize=optimize, checkpoint_path=path, **kwargs)

    @property
    def grid(self) -> VoxelGridSpec:
        """The model's own voxel grid (the default output grid)."""
        return self.config.model.scene

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the camera images are resized to: the network input (``model.input_height/width``,
        else the training images' size). Training may compute its photometric losses on larger
        images than the network sees; inference needs only the network's size."""
        m = self.config.model
        if m.input_height:
            return m.input_height, m.input_width
        return self.config.data.image_height, self.config.data.image_width

    @property
    def training_rig(self) -> Optional[dict]:
        """The checkpoint's training rig (training.checkpoint.training_rig), None when not stored."""
        return getattr(self.model, "training_rig", None)

    @property
    def camera_names(self) -> list[str]:
        """Cameras the checkpoint was trained on, in order ([] = any)."""
        return list(self.config.data.cameras)

    # --------------------------------------------------------------------------- preprocessing
    def check_frame(self, frame: Frame) -> None:
        """Raise ValueError naming the problem when `frame` cannot be fed to this checkpoint."""
        frame.validate()
        expected = self.camera_names
        if expected and list(frame.camera_names) != expected:
            if sorted(frame.camera_names) == sorted(expected):
                raise ValueError(f"frame cameras {list(frame.camera_names)} are in another order than the "
                                 f"checkpoint's {expected}")
            raise ValueError(f"frame has {frame.num_cameras} camera(s) {list(frame.camera_names)}, but the checkpoint "
                             f"was trained on {len(expected)}: {expected}")
        H, W = frame.image_size
        K = frame.K.reshape(-1, 3, 3).detach().cpu()  # one copy, not a device sync per float() below
        for i, k in enumerate(K):
            name = frame.camera_names[i % frame.num_cameras]
            fx, fy, cx, cy = (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
            if fx <= 0 or fy <= 0:
                raise ValueError(f"camera {name}: focal lengths must be positive, got fx={fx:.1f}, fy={fy:.1f}")
            rx, ry = cx / W, cy / H
            # A principal point outside the central 90 % means K belongs to an image of another size.
            if not (0.05 <= rx <= 0.95 and 0.05 <= ry <= 0.95):
                raise ValueError(
                    f"camera {name}: principal point ({cx:.1f}, {cy:.1f}) lies far from the centre of its "
                    f"{W}x{H} image: K does not match the image size (resized images need scaled intrinsics)")
            if abs(rx - ry) > 0.3:
                raise ValueError(
                    f"camera {name}: principal point ({cx:.1f}, {cy:.1f}) sits at {rx:.0%} of the width but "
                    f"{ry:.0%} of the height of the {W}x{H} image: K was made for an image of another aspect ratio")
            if not 0.2 < fx / fy < 5.0:
                raise ValueError(f"camera {name}: fx/fy = {fx / fy:.2f} is implausible for a {W}x{H} image")

    def preprocess(self, frame: Frame) -> Frame:
        """Check, resize to the network input (K scaled), batch and move to the device -> batched Frame."""
        self.check_frame(frame)
        batched = frame.images.dim() == 5
        imgs = frame.images if batched else frame.images.unsqueeze(0)
        K = frame.K if batched else frame.K.unsqueeze(0)
        T = frame.T_ego_cam if batched else frame.T_ego_cam.unsqueeze(0)
        Tw = frame.T_world_ego if batched else frame.T_world_ego.unsqueeze(0)
        B, N = imgs.shape[:2]
        h, w = self.input_size
        x, Kn = resize_image(imgs.reshape(B * N, *imgs.shape[2:]).float(), K.reshape(B * N, 3, 3).float(), h, w)
        ts = frame.timestamp if isinstance(frame.timestamp, Tensor) else torch.tensor([float(frame.timestamp)])
        return Frame(images=x.reshape(B, N, 3, h, w).to(self.device), K=Kn.reshape(B, N, 3, 3).to(self.device),
                     T_ego_cam=T.float().to(self.device), T_world_ego=Tw.float().to(self.device),
                     timestamp=ts.reshape(-1), camera_names=list(frame.camera_names))

    # ------------------------------------------------------------------------------- network
    def _autocast(self):
        if self.dtype == torch.bfloat16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _optimized_net(self, net_in: Frame) -> nn.Module:
        key = (tuple(net_in.images.shape), self.optimize, self.dtype)
        if key not in self._optimized:
            wrapper = _TraceableNet(self.model).eval()
            if self.optimize == "trace":
                args = (net_in.images, net_in.K, net_in.T_ego_cam)
                with torch.no_grad(), self._autocast(), _quiet_trace_warnings():
                    traced = torch.jit.trace(wrapper, args, check_trace=False)
                    if self.dtype == torch.float32:  # freeze folds conv+BN and constants (fp32 only)
                        traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                self._optimized[key] = traced
            elif self.optimize == "cudagraph":
                self._optimized[key] = torch.compile(wrapper, mode="reduce-overhead", dynamic=False)
            else:
                self._optimized[key] = torch.compile(wrapper, dynamic=False)
        return self._optimized[key]

    @torch.no_grad()
    def encode(self, frame: Frame, preprocessed: bool = False):
        """Frame -> (SceneField of the batch, the preprocessed batched Frame)."""
        from selfocc_core.model.field import SceneField

        net_in = frame if preprocessed else self.preprocess(frame)
        with self._autocast():
            if self.optimize is None:
                field_ = self.model(net_in)
            else:
                net = self._optimized_net(net_in)
                if self.optimize == "cudagraph":
                    torch.compiler.cudagraph_mark_step_begin()  # a new inference step: earlier outputs are released
                out = net(net_in.images, net_in.K, net_in.T_ego_cam)
                if self.optimize == "cudagraph":  # graph outputs live in buffers the next replay overwrites
                    out = tuple(o.clone() for o in out)
                field_ = SceneField(self.grid, out[0].float(), out[1], out[2] if len(out) > 2 else None)
        return field_, net_in

    # ----------------------------------------------------------------------------- occupancy
    def sharpness(self) -> float:
        """Confidence slope (1/m): the NeuS sharpness, capped at 4 per voxel size."""
        s = float(self.model.inv_s().detach()) if hasattr(self.model, "inv_s") else 1.0 / self.grid.voxel_size
        return min(s, 4.0 / self.grid.voxel_size)

    @torch.no_grad()
    def occupancy(self, field_, grid: Optional[VoxelGridSpec] = None) -> dict[str, Tensor]:
        """SceneField -> dict of ``sdf, occupied, labels, confidence`` ``[B, X, Y, Z]`` on `grid` (CPU)."""
        grid = grid or self.grid
        if grid == field_.grid:
            sdf = field_.sdf_volume().float()
            sem = field_.semantic_volume()
        else:  # trilinear reads at the output voxel centres (outside the model's box: free)
            B = field_.batch_size
            pts = grid.centers(device=sdf_device(field_)).unsqueeze(0).expand(B, -1, -1, -1, -1)
            q = field_.query(pts)
            sdf = q.sdf.float()
            sem = None if q.semantics is None else q.semantics.movedim(-1, 1)
        occupied = occupancy_from_sdf(sdf, grid.voxel_size)
        margin = sdf - OCCUPANCY_TOLERANCE * grid.voxel_size  # signed distance to the decision threshold
        p_state = torch.sigmoid(margin.abs() * self.sharpness())
        if sem is not None:
            prob, cls = torch.softmax(sem.float(), dim=1).max(dim=1)
            labels = torch.where(occupied, cls.to(torch.uint8), torch.full_like(cls, FREE_LABEL, dtype=torch.uint8))
            confidence = torch.where(occupied, p_state * prob, p_state)
        else:
            labels = torch.where(occupied, 0, FREE_LABEL).to(torch.uint8)
            confidence = p_state
        return {k: v.cpu() for k, v in dict(sdf=sdf, occupied=occupied, labels=labels, confidence=confidence).items()}

    # --------------------------------------------------------------------------------- depth
    @torch.no_grad()
    def render_depth(self, field_, K: Tensor, T_ego_cam: Tensor, image_size: tuple[int, int],
                     out_size: Optional[tuple[int, int]] = None, stride: Optional[int] = None) -> Tensor:
        """Depth ``[B, N, H_out, W_out]`` (metres) of cameras ``K [B, N, 3, 3]`` (for `image_size`) and
        ``T_ego_cam [B, N, 4, 4]`` (in the field's ego frame), rendered through `field_` on a ray grid
        of `stride` and bilinearly upsampled to `out_size` (default: `image_size`).

        Cameras of another time step (novel-view depth) are expressed in the field's ego frame:
        ``T_ego0_cam = inv(T_world_ego0) @ T_world_ego1 @ T_ego1_cam``.
        """
        from selfocc_core.rendering.ray_sampler import generate_rays, ray_grid_shape, ray_grid_to_image

        stride = int(stride or self.depth_stride)
        K, T_ego_cam = K.to(self.device).float(), T_ego_cam.to(self.device).float()
        B, N = K.shape[:2]
        rays = generate_rays(K, T_ego_cam, image_size, stride, random_offset=False, box=self.config.model.scene,
                             min_near=self.config.model.min_near)
        R = rays.origins.shape[1]
        depth = torch.empty(B, R, device=self.device)
        chunk = max(1, self.ray_chunk // B)
        for s in range(0, R, chunk):
            sub = _slice_rays(rays, s, min(R, s + chunk))
            with self._autocast():
                out = self.model.render(field_, sub, num_samples=self.num_depth_samples, stratified=False)
            depth[:, s:s + chunk] = out.depth.float()
        h, w = ray_grid_shape(image_size, stride)
        size = tuple(out_size or image_size)
        # ray (r, c) goes through pixel (c*stride + stride//2, r*stride + stride//2) of the input image
        d = ray_grid_to_image(depth.view(B * N, 1, h, w), stride, image_size, size)
        return d.view(B, N, *size).cpu()

    # ------------------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, frame: Frame, grid: Optional[VoxelGridSpec] = None, with_depth: bool = True,
                return_field: bool = False, depth_size: Optional[tuple[int, int]] = None):
        """Frame (one ``[N, 3, H, W]`` or batched ``[B, N, 3, H, W]``) -> OccupancyPrediction.

        grid: output voxel grid (default: the model's). with_depth: render per-camera depth.
        return_field: also return the SceneField (for rendering other views), as a tuple.
        depth_size: (H, W) of the depth images (default: the frame's image size); the depth is
        rendered on the model's ray grid either way and bilinearly resampled to it.
        """
        if depth_size is not None and (len(depth_size) != 2 or min(int(v) for v in depth_size) < 1):
            raise ValueError(f"OccupancyPredictor.predict: depth_size must be (H, W) >= 1, got {depth_size}")
        t0 = time.perf_counter()
        net_in = self.preprocess(frame)
        t1 = _sync_time(self.device)
        field_, _ = self.encode(net_in, preprocessed=True)
        t2 = _sync_time(self.device)
        occ = self.occupancy(field_, grid)
        t3 = _sync_time(self.device)
        depth = None
        if with_depth:
            size = tuple(int(v) for v in depth_size) if depth_size is not None else frame.image_size
            depth = self.render_depth(field_, net_in.K, net_in.T_ego_cam, self.input_size, out_size=size)
        t4 = _sync_time(self.device)
        batched = frame.images.dim() == 5

        def unb(x):
            return x if batched or x is None else x[0]

        pred = OccupancyPrediction(
            grid=grid or self.grid, occupied=unb(occ["occupied"]), labels=unb(occ["labels"]),
            confidence=unb(occ["confidence"]), sdf=unb(occ["sdf"]), depth=unb(depth),
            camera_names=list(frame.camera_names), class_names=self.class_names,
            timings={"preprocess": 1e3 * (t1 - t0), "network": 1e3 * (t2 - t1), "occupancy": 1e3 * (t3 - t2),
                     "depth": 1e3 * (t4 - t3), "total": 1e3 * (t4 - t0)},
        )
        return (pred, field_) if return_field else pred


def sdf_device(field_) -> torch.device:
    return field_.sdf_volume().device


def _slice_rays(rays, s: int, e: int):
    from dataclasses import replace

    def cut(t):
        return None if t is None else t[:, s:e]

    return replace(rays, origins=cut(rays.origins), directions=cut(rays.directions), z_per_unit=cut(rays.z_per_unit),
                   near=cut(rays.near), far=cut(rays.far), camera_index=cut(rays.camera_index),
                   pixels=cut(rays.pixels), valid=cut(rays.valid))


def _sync_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def _quiet_trace_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # torch >= 2.10 marks the TorchScript tools deprecated; they still work and give the
        # cheapest optimised CPU path (frozen graph, conv+BN folded). "compile" is the successor.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        yield
