"""Feature-map sizes per pyramid level, shared by the network and anchors."""
from __future__ import annotations


def feature_sizes(image_size: tuple[int, int], max_level: int) -> list[tuple[int, int]]:
    """(height, width) of levels 0..max_level for an input of ``image_size``.

    Each level halves the previous one rounding up, as a stride-2 'SAME'
    convolution or pooling does (official ``get_feat_sizes``).
    """
    height, width = image_size
    sizes = [(height, width)]
    for _ in range(max_level):
        height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        sizes.append((height, width))
    return sizes
