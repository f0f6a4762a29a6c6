"""Pictures: colour maps, voxel renders (bird's-eye and perspective), panels and videos."""

from selfocc_core.viz.colormaps import apply_colormap, colorize_depth, label_colors, to_uint8_image
from selfocc_core.viz.compare import caption, class_legend, depth_legend, hstack, save_png, titled, vstack
from selfocc_core.viz.video import write_video
from selfocc_core.viz.voxels import ViewCamera, chase_camera, raycast_voxels, render_bev, render_perspective

__all__ = [
    "apply_colormap", "colorize_depth", "label_colors", "to_uint8_image", "caption", "class_legend",
    "depth_legend", "hstack", "save_png", "titled", "vstack", "write_video", "ViewCamera", "chase_camera",
    "raycast_voxels", "render_bev", "render_perspective",
]
