"""`selfocc train`: self-supervised SelfOcc training (single process, or multi-GPU/-node under torchrun).

    selfocc train --config tiny_synth --data synthetic --out runs/tiny
    torchrun --nproc_per_node 8 -m selfocc_core.cli train --config nuscenes_occ --data /data/nuscenes --out runs/nus
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="preset name (nuscenes_occ, kitti_occ, nuscenes_bev_occ, "
                   "tiny_synth) or a YAML path")
    p.add_argument("--data", required=True, help="dataset: a nuScenes/KITTI/DDAD root, an info .pkl, a rosbag2 "
                   "folder, or 'synthetic[:seed=S,frames=F]'")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, tb/)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (fresh start if there is none)")
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--eval-data", default=None, help="override train.eval_data (dataset for periodic evaluation); "
                   "'same' (or the --data value itself) scores the training recording itself (per-sequence training)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process on CPU (default 1: "
                   "small models gain little from more, and a shared machine loses a lot; 0 = torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from selfocc_core.config_io import ConfigError, to_dict
    from selfocc_core.io_utils import atomic_write_text
    from selfocc_core.training import distributed as D
    from selfocc_core.training.config import load_experiment_config
    from selfocc_core.training.data import eval_spec_and_split, open_data
    from selfocc_core.training.trainer import Trainer, TrainingDivergedError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.eval_data is not None:
        overrides.append(f"train.eval_data={json.dumps(args.eval_data)}")
    try:
        cfg = load_experiment_config(args.config, overrides)
    except ConfigError as e:
        print(f"selfocc train: {e}", file=sys.stderr)
        return 2
    env = D.setup_distributed(args.device)
    if env.device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        # Training never needs ground truth: do not even load it.
        train_set = open_data(args.data, dataclasses.replace(cfg.data, load_gt=False), "train")
        eval_set = None
        if cfg.train.eval_interval > 0 and env.is_main:
            eval_spec, eval_split = eval_spec_and_split(cfg.train.eval_data, args.data)
            try:
                eval_set = open_data(eval_spec, dataclasses.replace(cfg.data, load_gt=True), eval_split)
            except (ValueError, FileNotFoundError) as e:
                logging.getLogger("selfocc.train").warning("no evaluation data (%s): %s", eval_spec, e)
        out = Path(args.out)
        trainer = Trainer(cfg, train_set, out, env, eval_set=eval_set, resume=args.resume,
                          progress=not args.no_progress)
        if env.is_main:
            import yaml

            atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
            atomic_write_text(out / "command.txt", " ".join(sys.argv) + "\n")
        t0 = time.time()
        result = trainer.run()
        trainer.close()
        if env.is_main:
            summary = {"step": result.step, "last_loss": result.last_loss, "skipped_steps": result.skipped_steps,
                       "context_pairs": result.pairs, "wall_seconds": round(time.time() - t0, 1),
                       "stopped_at_wall_limit": result.stopped_at_wall_limit, "evals": result.evals}
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
            print(json.dumps({k: v for k, v in summary.items() if k != "evals"}))
            if result.evals:
                print("first eval:", json.dumps(result.evals[0]))
                print("last eval: ", json.dumps(result.evals[-1]))
        return 0
    except TrainingDivergedError as e:
        print(f"selfocc train: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"selfocc train: {e}", file=sys.stderr)
        return 2
    finally:
        D.cleanup(env)
