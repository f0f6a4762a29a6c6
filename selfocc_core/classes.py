"""Semantic classes (Occ3D-nuScenes) and their display colours.

The same colours are used by the visualisation module and the RViz MarkerArray, so a
class looks the same in a PNG and on the robot.
"""

from __future__ import annotations

import numpy as np

OCC3D_CLASSES: tuple[str, ...] = (
    "others",  # 0
    "barrier",  # 1
    "bicycle",  # 2
    "bus",  # 3
    "car",  # 4
    "construction_vehicle",  # 5
    "motorcycle",  # 6
    "pedestrian",  # 7
    "traffic_cone",  # 8
    "trailer",  # 9
    "truck",  # 10
    "driveable_surface",  # 11
    "other_flat",  # 12
    "sidewalk",  # 13
    "terrain",  # 14
    "manmade",  # 15
    "vegetation",  # 16
    "free",  # 17
)
FREE_LABEL = 17
NUM_CLASSES = len(OCC3D_CLASSES)
CLASS_ID = {name: i for i, name in enumerate(OCC3D_CLASSES)}

# RGB 0..255, the palette commonly used for Occ3D visualisations.
OCC3D_COLORS = np.array(
    [
        [0, 0, 0],  # others
        [255, 120, 50],  # barrier
        [255, 192, 203],  # bicycle
        [255, 255, 0],  # bus
        [0, 150, 245],  # car
        [0, 255, 255],  # construction_vehicle
        [200, 180, 0],  # motorcycle
        [255, 0, 0],  # pedestrian
        [255, 240, 150],  # traffic_cone
        [135, 60, 0],  # trailer
        [160, 32, 240],  # truck
        [255, 0, 255],  # driveable_surface
        [139, 137, 137],  # other_flat
        [75, 0, 75],  # sidewalk
        [150, 240, 80],  # terrain
        [230, 230, 250],  # manmade
        [0, 175, 0],  # vegetation
        [255, 255, 255],  # free
    ],
    dtype=np.uint8,
)
