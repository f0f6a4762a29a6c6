"""`selfocc bench` runs end to end and writes a complete, self-consistent JSON (no timing asserts)."""

from __future__ import annotations

import json

import pytest
import yaml

from selfocc_core import bench
from selfocc_core.cli import main as selfocc_main
from selfocc_core.config_io import to_dict
from test_predictor_core import _config


@pytest.mark.parametrize("config", ["small", pytest.param("tiny_synth", marks=pytest.mark.slow)])
def test_bench_cli_writes_consistent_json(tmp_path, capsys, config):
    if config == "small":  # tiny_synth at 32 x 56 with 16 x 16 planes: seconds, not minutes
        path = tmp_path / "small.yaml"
        path.write_text(yaml.safe_dump(to_dict(_config())))
        # the traced path is checked against eager in test_predictor_core; here only eager + training
        config, size, extra = str(path), (32, 56), ["--no-optimized"]
    else:
        size, extra = (64, 112), []
    out = tmp_path / "b" / "bench.json"
    rc = selfocc_main(["bench", "--config", config, "--device", "cpu", "--json", str(out), "--iters", "2",
                       "--warmup", "0", "--train-iters", "1", "--no-render", *extra])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["input"]["cameras"] == ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"]
    assert (r["input"]["height"], r["input"]["width"]) == size
    for m in r["predictor"].values():
        assert m["iters"] == 2 and m["min_ms"] <= m["p50_ms"] <= m["p95_ms"]
        assert m["fps"] > 0 and m["peak_memory_mb"] > 0
        assert set(m["stages_median_ms"]) >= {"network", "depth", "total"}
        n = m["launches_per_prediction"]
        assert n["cpu_proxy_ops"] > 50 and n["host_syncs"] >= 0 and "cuda_kernels" not in n
    if not extra:
        eager, fast = r["predictor"]["eager_fp32"], r["predictor"]["optimized_trace_fp32"]
        assert fast["agreement_with_eager"]["occupancy_agreement"] >= 0.99
        assert abs(fast["speedup_vs_eager_p50"] - eager["p50_ms"] / fast["p50_ms"]) < 0.01
    else:
        assert list(r["predictor"]) == ["eager_fp32"]
    t = r["train_step"]
    assert t["iters"] == 1 and t["samples_per_s"] > 0 and t["peak_memory_mb"] > 0
    assert "synth_render" not in r
    table = capsys.readouterr().out
    assert "| predictor eager_fp32 |" in table and "training step" in table


def test_bench_rejects_missing_cuda_and_bad_iters(tmp_path, capsys):
    import torch

    if not torch.cuda.is_available():
        assert selfocc_main(["bench", "--device", "cuda", "--json", str(tmp_path / "x.json")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert selfocc_main(["bench", "--iters", "0", "--json", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_kernel_launch_count_is_the_ops_that_run_kernels():
    """A hand-countable predictor: 3 elementwise kernels (mul, add, exp) and 1 host sync per call;
    views, allocations and dtype no-ops do not count."""
    import torch

    class Tiny:
        device = torch.device("cpu")

        def predict(self, frame):
            x = frame.view(2, 2).t().to(torch.float32)  # views + a no-op .to: no kernel
            y = torch.exp(x * 2.0 + 1.0)
            return float(y.sum() > 0)  # sum is a kernel too; float() reads it: one sync

    n = bench.count_kernel_launches(Tiny(), torch.ones(4))
    assert n == {"cpu_proxy_ops": 5, "host_syncs": 1}  # mul, add, exp, sum, gt


def test_stats_percentiles_by_hand():
    s = bench._stats([10.0, 30.0, 20.0, 40.0, 50.0])
    assert (s["min_ms"], s["p50_ms"], s["p95_ms"], s["mean_ms"]) == (10.0, 30.0, 50.0, 30.0)
    assert s["fps"] == round(1000 / 30, 3)
