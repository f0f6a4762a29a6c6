"""Procedural synthetic driving world with exact ground truth (`selfocc synth`).

world.py (primitives, layout), textures.py (procedural materials), raycast.py (analytic ray
casting), render.py (cameras -> RGB/depth/semantics), occupancy.py (GT voxels + visibility
masks), rigs.py (real nuScenes / KITTI calibrations), sequence.py (a drive: frames + GT),
exporters, preview, benchmark and the CLI.
"""
