"""Anchors and RoI levels placed by the backbone's real output strides, on torchvision's generators.

Two torchvision traits matter for stride-changed SAP backbones (docs/detection.md):

* ``AnchorGenerator`` infers each level's stride as ``padded image size // map size``, which is wrong whenever the map
  does not divide the image (a 2222 backbone at 800x1344 would get 61/114/200-px strides where the maps are at
  64/128/256). :class:`StridedAnchorGenerator` takes the strides explicitly, as mmdetection's generator does.
* ``MultiScaleRoIAlign`` infers the scales from the first batch and maps a RoI to a level by its *absolute* size
  (``canonical_level`` 4 at 224 px), where mmdetection maps by level *index* (``floor(log2(sqrt(wh) / 56))``).
  :class:`StridedRoIAlign` fixes the scales from the strides and shifts ``canonical_level`` by ``log2(stride0 / 4)``
  so that both assign every RoI to the same level.

:func:`ssd_default_boxes` builds SSD's default boxes (torchvision ``DefaultBoxGenerator``) from the SAP config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

#: mmdetection's ``AnchorGenerator(scales=[8], ratios=[0.5, 1, 2])`` of the SAP Faster R-CNN: side = 8 x stride.
RPN_ANCHOR_SCALE = 8
RPN_ASPECT_RATIOS = (0.5, 1.0, 2.0)

#: The SAP SSDlite default boxes at 320 px (reference_spec §4.2): min/max sizes and steps of the six levels.
SSD_SIZE = 320
SSD_MIN_SIZES = (48, 100, 150, 202, 253, 304)
SSD_MAX_SIZE = 320
SSD_STEPS = (16, 32, 64, 107, 160, 320)
SSD_ASPECT_RATIOS = ((2, 3),) * 6


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class StridedAnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` with explicit per-level strides (one per feature map).

    Anchors sit at ``grid index x stride`` (top-left, no offset: mmdetection 2.x ``center_offset=0``), whatever the
    map and padded image sizes are.
    """

    def __init__(
        self, sizes: Sequence[Sequence[int]], aspect_ratios: Sequence[Sequence[float]], strides: Sequence[int]
    ):
        super().__init__(tuple(tuple(s) for s in sizes), tuple(tuple(r) for r in aspect_ratios))
        if len(strides) != len(self.sizes):
            raise ValueError(f"got {len(strides)} strides for {len(self.sizes)} anchor levels")
        self.strides = tuple(int(s) for s in strides)

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"got {len(feature_maps)} feature maps for {len(self.strides)} anchor strides")
        grid_sizes = [fm.shape[-2:] for fm in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        levels = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [levels for _ in image_list.image_sizes]


def rpn_anchor_generator(strides: Sequence[int]) -> StridedAnchorGenerator:
    """The SAP RPN anchors: one size ``8 x stride`` and ratios 0.5/1/2 per level, at the given level strides."""
    return StridedAnchorGenerator(
        [(RPN_ANCHOR_SCALE * s,) for s in strides], [RPN_ASPECT_RATIOS] * len(strides), strides
    )


class StridedRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` whose scales are ``1 / stride`` and whose level mapping equals mmdetection's.

    mmdetection (``SingleRoIExtractor``, ``finest_scale=56``) sends a RoI of side ``s = sqrt(w h)`` to level index
    ``clamp(floor(log2(s / 56)), 0, L - 1)``; torchvision computes ``floor(canonical_level + log2(s / 224))`` clamped to
    ``[log2 stride0, log2 stride_last]``. They agree when ``canonical_level = log2(stride0) + 2`` (4 for stride 4).
    """

    def __init__(
        self, featmap_names: Sequence[str], strides: Sequence[int], output_size: int = 7, sampling_ratio: int = 0
    ):
        if len(featmap_names) != len(strides) or not all(_is_power_of_two(int(s)) for s in strides):
            raise ValueError(f"need one power-of-two stride per feature map, got {list(strides)} for {featmap_names}")
        k_min, k_max = int(math.log2(strides[0])), int(math.log2(strides[-1]))
        super().__init__(list(featmap_names), output_size, sampling_ratio, canonical_level=k_min + 2)
        self.strides = tuple(int(s) for s in strides)
        self.scales = [1.0 / s for s in self.strides]
        self.map_levels = initLevelMapper(k_min, k_max, canonical_scale=self.canonical_scale, canonical_level=k_min + 2)


def ssd_default_boxes(
    stride_multiplier: int = 1, image_size: int = SSD_SIZE, map_sizes: Sequence[int] | None = None
) -> DefaultBoxGenerator:
    """SSD default boxes of the SAP SSDlite config (mmdetection ``SSDAnchorGenerator``) as torchvision's generator.

    Six boxes per location: sizes ``min_k`` and ``sqrt(min_k min_{k+1})`` plus ``min_k`` at ratios 2, 3 and their
    inverses, as fractions of the 320-px input (so they scale with ``image_size``). Centres ``(j + 0.5) x step_k``:
    at the official 320 px the config's steps (16, 32, 64, 107, 160, 320), multiplied by 2 / 4 in the 2222121 /
    4222121 configs; at any other size the steps are ``image_size / map_size`` of the real maps (``map_sizes``), which
    is what the official steps are at 320 for 1222121 (107 is 320 / 3 rounded).
    """
    scales = [m / SSD_SIZE for m in SSD_MIN_SIZES] + [SSD_MAX_SIZE / SSD_SIZE]
    if image_size == SSD_SIZE:
        steps = [stride_multiplier * s for s in SSD_STEPS]
    elif map_sizes is not None:
        steps = [image_size / m for m in map_sizes]
    else:
        raise ValueError(f"SSD default boxes at {image_size} px need the feature-map sizes (map_sizes)")
    return DefaultBoxGenerator([list(r) for r in SSD_ASPECT_RATIOS], scales=scales, steps=steps)
