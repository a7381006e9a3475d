"""automl's detection AutoAugment and RandAugment policies, box-aware, in TF.

The policies of Zoph et al., "Learning Data Augmentation Strategies for
Object Detection" (arXiv:1906.11172), as google/automl's EfficientDet input
pipeline applies them with ``autoaugment_policy``: ``v0`` (the paper's),
``v1``, ``v2``, ``v3`` and ``randaug``. They are data here: a policy is a
tuple of sub-policies, a sub-policy a tuple of ``(op name, probability,
magnitude level 0..10)``; the ops live in
:mod:`efficientdet_tf.data.image_ops` (pixels only) and
:mod:`efficientdet_tf.data.box_aware_ops` (ops that read or move boxes), and
:data:`_OPS` says how each name turns a level into the op's argument.

What is reproduced from automl: the tables, probabilities and levels; one
sub-policy per image, uniformly, its ops in order, each with its
probability; the level-to-argument rules and constants (translate 250 px,
in-box translate 120 px, cutout 100 px, in-box cutout 50 px, box cutout 0.75
of the box, shear 0.3, rotate 30 degrees, enhance factors 0.1..1.9); a
random sign (1/2 each) for translations, shears and rotations; the
``*_Only_BBoxes`` ops always run, each box with a third of the listed
probability; ``randaug`` = one layer, magnitude 15, one of ten ops chosen
uniformly and always applied; grey (128) fill.

Deliberate differences:

* boxes that leave the image are reported (``keep`` false) so the caller
  drops them; automl instead turns a box with no area left into a sliver
  0.05 of the image wide on the border, a label on nothing;
* box geometry is exact float arithmetic on pixel edges (automl truncates
  corners to whole pixels first), shears pivot on the image's corner rather
  than its first pixel's centre (half a pixel apart), and the pixels "in" a
  box for the ``*_Only_BBoxes`` ops are those whose centres it contains
  (automl also takes the row and column at the box's far edges);
* Solarize with a threshold above 255 (randaug's magnitude 15 gives 384)
  changes nothing, as the op is defined; automl compares in uint8, which in
  a graph wraps 384 around to 128;
* Posterize at levels below 2.5 gets 1 bit, which is what automl's 0 bits
  ran as (TF clamps a shift by 8 on uint8 to 7); written out here instead of
  left to the shift;
* the sign conventions of translate and shear are the natural ones (positive
  moves right / down), automl's the opposite: the sign is random with
  probability 1/2 either way, so the distribution is the same;
* randomness is stateless from one seed per image (automl draws from TF's
  global generator), so a seeded pipeline repeats itself exactly.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import tensorflow as tf

from efficientdet_tf.config import choose
from efficientdet_tf.data import box_aware_ops, image_ops

POLICIES: tuple[str, ...] = ("v0", "v1", "v2", "v3", "randaug")

# Levels are on the scale the policy search used: 0..10.
MAX_LEVEL = 10.0
# automl's augmentation constants: the argument at level MAX_LEVEL.
TRANSLATE_PIXELS = 250.0
TRANSLATE_IN_BOX_PIXELS = 120.0
CUTOUT_PAD = 100
CUTOUT_IN_BOX_PAD = 50
BOX_CUTOUT_FRACTION = 0.75
SHEAR = 0.3
ROTATE_DEGREES = 30.0
SOLARIZE_THRESHOLD = 256
SOLARIZE_ADDITION = 110
POSTERIZE_BITS = 4
# Pillow enhancement factors, from ENHANCE_MIN to ENHANCE_MIN + ENHANCE_RANGE.
ENHANCE_MIN = 0.1
ENHANCE_RANGE = 1.8
# automl's dataloader calls RandAugment with these.
RANDAUG_LAYERS = 1
RANDAUG_MAGNITUDE = 15.0
# A *_Only_BBoxes op runs on each box with this share of its probability,
# so that crowded images do not have most of their boxes distorted.
IN_BOX_PROBABILITY_SCALE = 1.0 / 3.0

SubPolicy = tuple[tuple[str, float, int], ...]

_V0: tuple[SubPolicy, ...] = (
    (("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)),
    (("TranslateY_Only_BBoxes", 0.2, 2), ("Cutout", 0.8, 8)),
    (("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)),
    (("ShearY_BBox", 1.0, 2), ("TranslateY_Only_BBoxes", 0.6, 6)),
    (("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)),
)

POLICY_TABLES: dict[str, tuple[SubPolicy, ...]] = {
    "v0": _V0,
    "v1": _V0 + (
        (("Color", 0.0, 0), ("ShearX_Only_BBoxes", 0.8, 4)),
        (("ShearY_Only_BBoxes", 0.8, 2), ("Flip_Only_BBoxes", 0.0, 10)),
        (("Equalize", 0.6, 10), ("TranslateX_BBox", 0.2, 2)),
        (("Color", 1.0, 10), ("TranslateY_Only_BBoxes", 0.4, 6)),
        (("Rotate_BBox", 0.8, 10), ("Contrast", 0.0, 10)),
        (("Cutout", 0.2, 2), ("Brightness", 0.8, 10)),
        (("Color", 1.0, 6), ("Equalize", 1.0, 2)),
        (("Cutout_Only_BBoxes", 0.4, 6), ("TranslateY_Only_BBoxes", 0.8, 2)),
        (("Color", 0.2, 8), ("Rotate_BBox", 0.8, 10)),
        (("Sharpness", 0.4, 4), ("TranslateY_Only_BBoxes", 0.0, 4)),
        (("Sharpness", 1.0, 4), ("SolarizeAdd", 0.4, 4)),
        (("Rotate_BBox", 1.0, 8), ("Sharpness", 0.2, 8)),
        (("ShearY_BBox", 0.6, 10), ("Equalize_Only_BBoxes", 0.6, 8)),
        (("ShearX_BBox", 0.2, 6), ("TranslateY_Only_BBoxes", 0.2, 10)),
        (("SolarizeAdd", 0.6, 8), ("Brightness", 0.8, 10)),
    ),
    "v2": (
        (("Color", 0.0, 6), ("Cutout", 0.6, 8), ("Sharpness", 0.4, 8)),
        (("Rotate_BBox", 0.4, 8), ("Sharpness", 0.4, 2),
         ("Rotate_BBox", 0.8, 10)),
        (("TranslateY_BBox", 1.0, 8), ("AutoContrast", 0.8, 2)),
        (("AutoContrast", 0.4, 6), ("ShearX_BBox", 0.8, 8),
         ("Brightness", 0.0, 10)),
        (("SolarizeAdd", 0.2, 6), ("Contrast", 0.0, 10),
         ("AutoContrast", 0.6, 0)),
        (("Cutout", 0.2, 0), ("Solarize", 0.8, 8), ("Color", 1.0, 4)),
        (("TranslateY_BBox", 0.0, 4), ("Equalize", 0.6, 8),
         ("Solarize", 0.0, 10)),
        (("TranslateY_BBox", 0.2, 2), ("ShearY_BBox", 0.8, 8),
         ("Rotate_BBox", 0.8, 8)),
        (("Cutout", 0.8, 8), ("Brightness", 0.8, 8), ("Cutout", 0.2, 2)),
        (("Color", 0.8, 4), ("TranslateY_BBox", 1.0, 6),
         ("Rotate_BBox", 0.6, 6)),
        (("Rotate_BBox", 0.6, 10), ("BBox_Cutout", 1.0, 4),
         ("Cutout", 0.2, 8)),
        (("Rotate_BBox", 0.0, 0), ("Equalize", 0.6, 6),
         ("ShearY_BBox", 0.6, 8)),
        (("Brightness", 0.8, 8), ("AutoContrast", 0.4, 2),
         ("Brightness", 0.2, 2)),
        (("TranslateY_BBox", 0.4, 8), ("Solarize", 0.4, 6),
         ("SolarizeAdd", 0.2, 10)),
        (("Contrast", 1.0, 10), ("SolarizeAdd", 0.2, 8),
         ("Equalize", 0.2, 4)),
    ),
    "v3": (
        (("Posterize", 0.8, 2), ("TranslateX_BBox", 1.0, 8)),
        (("BBox_Cutout", 0.2, 10), ("Sharpness", 1.0, 8)),
        (("Rotate_BBox", 0.6, 8), ("Rotate_BBox", 0.8, 10)),
        (("Equalize", 0.8, 10), ("AutoContrast", 0.2, 10)),
        (("SolarizeAdd", 0.2, 2), ("TranslateY_BBox", 0.2, 8)),
        (("Sharpness", 0.0, 2), ("Color", 0.4, 8)),
        (("Equalize", 1.0, 8), ("TranslateY_BBox", 1.0, 8)),
        (("Posterize", 0.6, 2), ("Rotate_BBox", 0.0, 10)),
        (("AutoContrast", 0.6, 0), ("Rotate_BBox", 1.0, 6)),
        (("Equalize", 0.0, 4), ("Cutout", 0.8, 10)),
        (("Brightness", 1.0, 2), ("TranslateY_BBox", 1.0, 6)),
        (("Contrast", 0.0, 2), ("ShearY_BBox", 0.8, 0)),
        (("AutoContrast", 0.8, 10), ("Contrast", 0.2, 10)),
        (("Rotate_BBox", 1.0, 10), ("Cutout", 1.0, 10)),
        (("SolarizeAdd", 0.8, 6), ("Equalize", 0.8, 8)),
    ),
}

RANDAUG_OPS: tuple[str, ...] = (
    "Equalize", "Solarize", "Color", "Cutout", "SolarizeAdd",
    "TranslateX_BBox", "TranslateY_BBox", "ShearX_BBox", "ShearY_BBox",
    "Rotate_BBox")


def _scaled(maximum: float) -> Callable[[float], float]:
    """Level -> ``level / MAX_LEVEL * maximum`` (linear in the level)."""
    return lambda level: level / MAX_LEVEL * maximum


def _truncated(maximum: float) -> Callable[[float], int]:
    """Level -> ``int(level / MAX_LEVEL * maximum)`` (an integer argument)."""
    return lambda level: int(level / MAX_LEVEL * maximum)


def _enhance(level: float) -> float:
    """Level -> a Pillow enhancement factor in [0.1, 1.9] (1 = unchanged)."""
    return level / MAX_LEVEL * ENHANCE_RANGE + ENHANCE_MIN


def _posterize_bits(level: float) -> int:
    """Level -> bits kept, at least 1 (see the module docstring)."""
    return max(1, int(level / MAX_LEVEL * POSTERIZE_BITS))


class _Op(NamedTuple):
    """How a policy's op name is called.

    ``fn`` is called as ``fn(image, [boxes,] [argument,] [prob,] [seed])``:
    ``boxes`` if ``with_boxes`` (then it returns ``(image, boxes)``, else an
    image), the argument if ``to_argument`` is set (``to_argument(level)``,
    negated with probability 1/2 if ``signed``), ``prob`` (the per-box
    probability) if ``in_boxes``, and a seed if ``random``.
    """
    fn: Callable[..., Any]
    to_argument: Callable[[float], Any] | None = None
    signed: bool = False
    with_boxes: bool = False
    in_boxes: bool = False
    random: bool = False


def _in_boxes(fn: Callable[..., Any],
              to_argument: Callable[[float], Any] | None = None,
              signed: bool = False) -> _Op:
    """An ``*_Only_BBoxes`` op: always called, chooses its boxes itself."""
    return _Op(fn, to_argument, signed, with_boxes=True, in_boxes=True,
               random=True)


_OPS: dict[str, _Op] = {
    "AutoContrast": _Op(image_ops.autocontrast),
    "Equalize": _Op(image_ops.equalize),
    "Posterize": _Op(image_ops.posterize, _posterize_bits),
    "Solarize": _Op(image_ops.solarize, _truncated(SOLARIZE_THRESHOLD)),
    "SolarizeAdd": _Op(image_ops.solarize_add,
                       _truncated(SOLARIZE_ADDITION)),
    "Color": _Op(image_ops.color, _enhance),
    "Contrast": _Op(image_ops.contrast, _enhance),
    "Brightness": _Op(image_ops.brightness, _enhance),
    "Sharpness": _Op(image_ops.sharpness, _enhance),
    "Cutout": _Op(image_ops.cutout, _truncated(CUTOUT_PAD), random=True),
    "BBox_Cutout": _Op(box_aware_ops.box_cutout,
                       _scaled(BOX_CUTOUT_FRACTION), with_boxes=True,
                       random=True),
    "TranslateX_BBox": _Op(box_aware_ops.translate_x,
                           _scaled(TRANSLATE_PIXELS), signed=True,
                           with_boxes=True),
    "TranslateY_BBox": _Op(box_aware_ops.translate_y,
                           _scaled(TRANSLATE_PIXELS), signed=True,
                           with_boxes=True),
    "ShearX_BBox": _Op(box_aware_ops.shear_x, _scaled(SHEAR), signed=True,
                       with_boxes=True),
    "ShearY_BBox": _Op(box_aware_ops.shear_y, _scaled(SHEAR), signed=True,
                       with_boxes=True),
    "Rotate_BBox": _Op(box_aware_ops.rotate, _scaled(ROTATE_DEGREES),
                       signed=True, with_boxes=True),
    "TranslateY_Only_BBoxes": _in_boxes(box_aware_ops.translate_y_only_bboxes,
                                        _scaled(TRANSLATE_IN_BOX_PIXELS),
                                        signed=True),
    "ShearX_Only_BBoxes": _in_boxes(box_aware_ops.shear_x_only_bboxes,
                                    _scaled(SHEAR), signed=True),
    "ShearY_Only_BBoxes": _in_boxes(box_aware_ops.shear_y_only_bboxes,
                                    _scaled(SHEAR), signed=True),
    "Flip_Only_BBoxes": _in_boxes(box_aware_ops.flip_only_bboxes),
    "Equalize_Only_BBoxes": _in_boxes(box_aware_ops.equalize_only_bboxes),
    "Cutout_Only_BBoxes": _in_boxes(box_aware_ops.cutout_only_bboxes,
                                    _truncated(CUTOUT_IN_BOX_PAD)),
}

# (image, boxes, keep): what a policy threads through its ops.
_State = tuple[tf.Tensor, tf.Tensor, tf.Tensor]


# Built with explicit tf.cond / tf.switch_case, so AutoGraph has nothing to
# convert; skipping it keeps tracing inside Dataset.map quicker.
@tf.autograph.experimental.do_not_convert
def autoaugment(image: tf.Tensor, boxes: tf.Tensor, policy: str,
                seed: tf.Tensor, *, min_visible_fraction: float = 0.0
                ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Applies ``policy`` (one of :data:`POLICIES`) to one image and its boxes.

    ``image``: uint8 ``[h, w, 3]``, the decoded image (automl augments at the
    original resolution, before flip and resize; pixel constants such as the
    250 px translation assume that). ``boxes``: normalised yxyx ``[N, 4]``,
    clipped to ``[0, 1]`` first. ``seed``: int ``[2]``; the same seed gives
    the same result.

    Returns ``(image uint8 [h, w, 3], boxes [N, 4] normalised yxyx in [0, 1],
    keep bool [N])``. ``keep`` is false for a box that has no area left
    after an op, or whose area an op cut below ``min_visible_fraction`` of
    its area before that op (the default 0 drops only boxes that left the
    image, keeping clipped ones as COCO labels truncated objects); the caller
    drops those rows with their classes. An unknown policy is a
    :class:`~efficientdet_tf.config.ConfigError` naming the known ones.
    """
    run = choose(_RUNNERS, "autoaugment_policy", policy)
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"autoaugment needs a uint8 image, got {image.dtype}")
    boxes = tf.clip_by_value(tf.cast(boxes, tf.float32), 0.0, 1.0)
    keep = tf.ones(tf.shape(boxes)[:1], tf.bool)
    out_image, out_boxes, keep = run((image, boxes, keep), seed,
                                     min_visible_fraction)
    return tf.ensure_shape(out_image, image.shape), out_boxes, keep


def check_policy(policy: str) -> None:
    """Raises the :class:`~efficientdet_tf.config.ConfigError` of an unknown
    policy name; for callers to run before building a ``Dataset.map``, where
    the same error would arrive wrapped in AutoGraph's ``StagingError``."""
    choose(_RUNNERS, "autoaugment_policy", policy)


def _run_policy(table: tuple[SubPolicy, ...]
                ) -> Callable[[_State, tf.Tensor, float], _State]:
    """The runner of an AutoAugment table: one sub-policy, chosen uniformly."""
    longest = max(len(sub_policy) for sub_policy in table)

    def run(state: _State, seed: tf.Tensor, min_visible: float) -> _State:
        choice_seed, ops_seed = tf.unstack(tf.random.split(seed, 2))
        op_seeds = tf.unstack(tf.random.split(ops_seed, longest))
        choice = tf.random.stateless_uniform([], choice_seed, 0, len(table),
                                             tf.int32)

        def branch(sub_policy: SubPolicy) -> Callable[[], _State]:
            def apply() -> _State:
                result = state
                for (name, prob, level), op_seed in zip(sub_policy, op_seeds):
                    result = _apply(result, name, prob, level, op_seed,
                                    min_visible)
                return result
            return apply

        return tf.switch_case(choice, [branch(sub) for sub in table])
    return run


def _run_randaugment(state: _State, seed: tf.Tensor,
                     min_visible: float) -> _State:
    """RandAugment as automl's dataloader runs it: per layer one op of
    :data:`RANDAUG_OPS`, uniformly, at :data:`RANDAUG_MAGNITUDE`, always."""
    for layer_seed in tf.unstack(tf.random.split(seed, RANDAUG_LAYERS)):
        choice_seed, op_seed = tf.unstack(tf.random.split(layer_seed, 2))
        choice = tf.random.stateless_uniform([], choice_seed, 0,
                                             len(RANDAUG_OPS), tf.int32)
        state = tf.switch_case(choice, [
            lambda name=name, current=state: _apply(
                current, name, 1.0, RANDAUG_MAGNITUDE, op_seed, min_visible)
            for name in RANDAUG_OPS])
    return state


_RUNNERS: dict[str, Callable[[_State, tf.Tensor, float], _State]] = {
    **{name: _run_policy(table) for name, table in POLICY_TABLES.items()},
    "randaug": _run_randaugment,
}


def _apply(state: _State, name: str, prob: float, level: float,
           seed: tf.Tensor, min_visible: float) -> _State:
    """One op of a sub-policy: with probability ``prob`` (``*_Only_BBoxes``
    ops always, passing a third of it to each box), then ``keep`` updated
    from the box areas before and after."""
    op = _OPS[name]
    if prob == 0.0:
        # Listed in the tables but never run: not worth a graph branch.
        return state
    coin_seed, sign_seed, op_seed = tf.unstack(tf.random.split(seed, 3))
    image, boxes, keep = state
    args: list[Any] = []
    if op.to_argument is not None:
        argument = op.to_argument(level)
        if op.signed:
            negate = tf.random.stateless_uniform([], sign_seed) < 0.5
            argument = tf.where(negate, -argument, argument)
        args.append(argument)
    if op.in_boxes:
        args.append(prob * IN_BOX_PROBABILITY_SCALE)
    if op.random:
        args.append(op_seed)

    def run() -> tuple[tf.Tensor, tf.Tensor]:
        if op.with_boxes:
            return op.fn(image, boxes, *args)
        return op.fn(image, *args), boxes

    if op.in_boxes:
        new_image, new_boxes = run()
    else:
        apply = tf.random.stateless_uniform([], coin_seed) < prob
        new_image, new_boxes = tf.cond(apply, run, lambda: (image, boxes))
    visible, before = box_aware_ops.box_area(new_boxes), box_aware_ops.box_area(boxes)
    keep &= (visible > 0.0) & (visible >= min_visible * before)
    return new_image, new_boxes, keep


