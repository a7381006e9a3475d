"""What a configuration's network costs, and what its pyramid levels add.

A level below 3 (``min_level: 2``, for small objects) is cheap in
parameters, because the head convolutions are shared by every level and the
BiFPN adds only a node or two per cell, but each level down has four times
the locations of the one above, so nearly all of its cost is multiply-adds.
:func:`levels_cost` measures that against the same network at the preset's
levels, so a user sees the price before training ("FLOPs" are
multiply-adds, as in the EfficientDet paper: see
:mod:`efficientdet_tf.utils.profiling`).
"""
from __future__ import annotations

import dataclasses

import keras

from efficientdet_tf.config import Config
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.presets import DEFAULTS, PRESETS
from efficientdet_tf.utils.profiling import count_flops, count_params


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    """Parameters and multiply-adds of one network, per image."""
    params: int  # trainable
    all_params: int  # with the batch norms' moving statistics
    multiply_adds: int

    def text(self) -> str:
        return (f"trainable parameters {self.params:,}, all "
                f"{self.all_params:,}; {self.multiply_adds / 1e9:.3f}B "
                "multiply-adds per image")


def network_cost(model: keras.Model) -> NetworkCost:
    """``model``'s :class:`NetworkCost` (its inference graph is traced once)."""
    return NetworkCost(count_params(model),
                       count_params(model, trainable_only=False),
                       count_flops(model))


def preset_levels(config: Config) -> tuple[int, int]:
    """(min_level, max_level) of the named model ``config`` derives from
    (3..7, D7x's 3..8); a config with a name of its own compares with the
    defaults'."""
    preset = {**DEFAULTS, **PRESETS.get(config.name, {})}
    return preset["min_level"], preset["max_level"]


@dataclasses.dataclass(frozen=True)
class LevelsCost:
    """A network against the same one at its preset's pyramid levels."""
    levels: tuple[int, int]
    reference_levels: tuple[int, int]
    cost: NetworkCost
    reference: NetworkCost

    @property
    def params(self) -> int:
        """Trainable parameters the levels add (negative: save)."""
        return self.cost.params - self.reference.params

    @property
    def multiply_adds(self) -> int:
        """Multiply-adds per image the levels add (negative: save)."""
        return self.cost.multiply_adds - self.reference.multiply_adds

    def text(self) -> str:
        params = 100.0 * self.params / self.reference.params
        flops = 100.0 * self.multiply_adds / self.reference.multiply_adds
        low, high = self.levels
        ref_low, ref_high = self.reference_levels
        return (f"levels {low}..{high} against the preset's {ref_low}.."
                f"{ref_high}: {self.params:+,} params ({params:+.1f} %), "
                f"{self.multiply_adds / 1e9:+.3f} GFLOPs ({flops:+.1f} %)")


def levels_cost(config: Config, cost: NetworkCost | None = None
                ) -> LevelsCost | None:
    """What ``config``'s pyramid levels add to the same network at its
    preset's levels, which is built here to be measured; ``cost`` is
    ``config``'s own when already measured.

    None when the levels are the preset's, and when an explicit
    ``fpn_config`` lists nodes for the config's own levels: then there is no
    same network at other levels to compare with.
    """
    levels = (config.min_level, config.max_level)
    reference_levels = preset_levels(config)
    if levels == reference_levels or config.fpn_config:
        return None
    low, high = reference_levels
    reference = build_model(config.override({"min_level": low,
                                             "max_level": high}))
    return LevelsCost(levels, reference_levels,
                      cost or network_cost(build_model(config)),
                      network_cost(reference))
