"""`selfocc synth` command line: preview PNG, benchmark dict, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from selfocc_core.classes import CLASS_ID, OCC3D_COLORS
from selfocc_core.cli import main
from selfocc_core.synth.benchmark import bench_render


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_preview_default_writes_a_street_png(tmp_path, capsys):
    path = tmp_path / "synth.png"
    assert main(["synth", "--preview", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out
    img = np.asarray(Image.open(path))
    assert img.ndim == 3 and img.shape[0] >= 320 and img.shape[1] > 3 * 288
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    # the BEV shows road, sidewalk and cars in their Occ3D colours
    for name in ("driveable_surface", "sidewalk", "car", "manmade"):
        assert tuple(OCC3D_COLORS[CLASS_ID[name]]) in colours, name
    assert not list(tmp_path.glob("*.tmp"))


def test_bench_render_returns_fps():
    r = bench_render(sizes=((16, 32),), repeats=1, native=False, with_gt=False)
    assert r["rig"] == "nuscenes" and r["cameras"] == 6
    (row,) = r["render"]
    assert row["rays"] == 6 * 16 * 32 and row["fps"] > 0 and row["wall_s"] > 0
    json.dumps(r)
    with pytest.raises(ValueError, match="positive"):
        bench_render(sizes=((0, 32),))


def test_cli_errors(tmp_path, capsys):
    assert main(["synth"]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["synth", "--preview", str(tmp_path / "a.png"), "--height", "-3"]) == 2
    assert "--height must be positive" in capsys.readouterr().err
    assert main(["synth", "--preview", str(tmp_path / "a.png"), "--cameras", "CAM_NOPE"]) == 2
    assert "unknown camera" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--rig", "waymo", "--preview", "x.png"])
    (tmp_path / "exists").mkdir()
    assert main(["synth", "--out", str(tmp_path / "exists"), "--format", "kitti"]) == 2
    assert "exists" in capsys.readouterr().err
