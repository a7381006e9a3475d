"""Fitting anchors to a dataset's boxes (the dataset doctor's ``--fit_anchors``).

Fitted: the aspect ratios and ``anchor_scale`` for the config's image size
and levels, keeping the anchors per location ``A = num_scales *
len(aspect_ratios)`` unless asked (official heads have ``A * classes`` and
``A * 4`` outputs: another ``A`` re-initialises their last layers).

1. Ratios: k-means with distance ``1 - IoU`` between centred shapes of equal
   area, so only the ratio counts. That IoU falls with ``|log(w/h) -
   log(w'/h')|`` alone, so it is k-means on log ratios, with medians as
   centroids (``1 - IoU`` is about linear near 0 and saturates far off),
   run from several starts as one can leave a small cluster uncovered.
2. ``anchor_scale``: the best of a log-spaced grid by coverage, the share of
   boxes whose best-anchor IoU under the labeler's exact anchors
   (:func:`~efficientdet_tf.ops.anchor_coverage.best_anchor_iou`) reaches
   ``match_threshold``. Shapes cannot set it: a box sits up to half a stride
   from the nearest anchor centre, and the stride doubles per level.
3. A short coordinate search on each ratio and the scale, keeping only
   moves that raise coverage (ties: mean best IoU): it optimises what the
   labeler does, which step 1 only approximates.

The config's own setting competes as a start and in the final choice, so
with the counts kept the fit never lowers coverage. Large sets are
subsampled for the search only; reported coverages are over all boxes.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import yaml

from efficientdet_tf.config import Config, ConfigError
from efficientdet_tf.ops.anchor_coverage import best_anchor_iou
from efficientdet_tf.ops.anchors import AspectRatio, aspect_ratio_pairs

MAX_SEARCH_BOXES = 10_000  # more adds time to the search, not quality
SCALE_GRID = tuple(2.0 ** (e / 2) for e in range(-2, 7))  # 0.5 .. 8
REFINE_STEPS = (1 / 4, 1 / 8, 1 / 16)  # log2 of a ratio's w/h, of the scale
# Passes per step size at most: the tie-break on mean IoU can keep a search
# creeping by tiny gains.
MAX_PASSES = 3
_KMEANS_ITERATIONS = 100
_KMEANS_RESTARTS = 4  # k-means++ starts besides the quantile one

Score = tuple[float, float]  # (coverage, mean best IoU), compared in order


@dataclasses.dataclass(frozen=True)
class AnchorFit:
    """Fitted anchors and the coverage they change.

    ``aspect_ratios`` and ``anchor_scale`` are rounded to 3 decimals. When
    nothing covers more boxes than the config's own setting they are that
    setting, exactly as given if rounding it would lose a box. Coverages are
    shares of all boxes with an area; ``coverage_after`` is for the values
    stored here.
    """
    aspect_ratios: tuple[tuple[float, float], ...]
    anchor_scale: float
    num_scales: int
    coverage_before: float
    coverage_after: float
    anchors_per_location_changed: bool

    def overrides(self) -> dict[str, Any]:
        """Config overrides in plain Python types (for YAML and ``override``)."""
        return {"aspect_ratios": [[w, h] for w, h in self.aspect_ratios],
                "anchor_scale": self.anchor_scale,
                "num_scales": self.num_scales}

    def yaml(self) -> str:
        """:meth:`overrides` as YAML, usable as an ``--hparams`` file."""
        text = yaml.safe_dump(self.overrides(), sort_keys=False,
                              default_flow_style=None)
        if not self.anchors_per_location_changed:
            return text
        count = self.num_scales * len(self.aspect_ratios)
        return (f"# {count} anchors per location, unlike the config: from an "
                f"official checkpoint the heads' last layers (class and box "
                f"outputs) are re-initialised\n{text}")


@dataclasses.dataclass(frozen=True)
class _Setting:
    """Candidate anchors: ``(w, h)`` ratio pairs and one anchor_scale."""
    pairs: tuple[AspectRatio, ...]
    scale: float


def fit_anchors(boxes: np.ndarray, config: Config, *,
                match_threshold: float = 0.5, num_ratios: int | None = None,
                num_scales: int | None = None, seed: int = 0) -> AnchorFit:
    """Fits aspect ratios and anchor_scale to ``boxes`` (see the module).

    ``boxes``: ``[N, 4]`` yxyx pixels at network-input scale (as
    :func:`best_anchor_iou` takes); boxes of no finite area are ignored.
    ``num_ratios`` / ``num_scales``: ``None`` keeps the config's counts.
    ``seed`` drives the k-means++ starts and, past ``MAX_SEARCH_BOXES``
    boxes, which ones the search uses.
    """
    boxes = _usable_boxes(boxes)
    own_pairs = aspect_ratio_pairs(config.aspect_ratios)
    num_ratios = _count("num_ratios", num_ratios, len(own_pairs))
    num_scales = _count("num_scales", num_scales, config.num_scales)
    if not 0.0 < match_threshold <= 1.0:
        raise ConfigError(f"match_threshold must be in (0, 1], got "
                          f"{match_threshold!r}")
    # The config's setting competes when it is one the fit could return.
    own = None
    if ((len(own_pairs), config.num_scales) == (num_ratios, num_scales)
            and not isinstance(config.anchor_scale, (list, tuple))):
        own = _Setting(own_pairs, float(config.anchor_scale))

    rng = np.random.default_rng(seed)
    sample = boxes if len(boxes) <= MAX_SEARCH_BOXES else boxes[np.sort(
        rng.choice(len(boxes), MAX_SEARCH_BOXES, replace=False))]
    search = _Search(sample, config, num_scales, match_threshold)
    heights, widths = (sample[:, 2:] - sample[:, :2]).T
    ratios = _kmeans_log_ratios(np.log2(widths / heights), num_ratios, rng)
    pairs = tuple((2.0 ** (r / 2), 2.0 ** (-r / 2)) for r in ratios)  # area 1
    starts = [_Setting(pairs, scale) for scale in SCALE_GRID]
    if own is not None:
        starts.append(own)
    best = search.refine(max(starts, key=search.score))
    fitted = _rounded(_Setting(_in_order_of(best.pairs, own_pairs), best.scale))

    before = _score(best_anchor_iou(boxes, config).iou, match_threshold)[0]
    on_all = _Search(boxes, config, num_scales, match_threshold)
    # Listed first, the config's own setting wins ties: a change has to
    # raise coverage (mean IoU alone moves anchors by noise).
    choices = ([_rounded(own)] if own is not None else []) + [fitted]
    after, chosen = max(((on_all.score(c)[0], c) for c in choices),
                        key=lambda scored: scored[0])
    if own is not None and after < before:  # rounding lost a box
        after, chosen = before, own
    return AnchorFit(
        aspect_ratios=chosen.pairs, anchor_scale=chosen.scale,
        num_scales=num_scales, coverage_before=before, coverage_after=after,
        anchors_per_location_changed=(num_ratios * num_scales !=
                                      len(own_pairs) * config.num_scales))


class _Search:
    """Scores candidate settings on fixed boxes, and refines one.

    The best IoU over all anchors is the maximum, over the ratios, of the
    best IoU over one ratio's anchors (all levels and octave scales), a
    column that depends on that ratio and the scale alone. Columns are kept,
    so a step on one ratio computes one column, and a step back none.
    """

    def __init__(self, boxes: np.ndarray, config: Config, num_scales: int,
                 match_threshold: float):
        self.boxes, self.config = boxes, config
        self.num_scales, self.match_threshold = num_scales, match_threshold
        self._columns: dict[tuple[AspectRatio, float], np.ndarray] = {}

    def score(self, setting: _Setting) -> Score:
        best = np.max([self._column(p, setting.scale) for p in setting.pairs],
                      axis=0)
        return _score(best, self.match_threshold)

    def refine(self, setting: _Setting) -> _Setting:
        """Coordinate search: per step size, passes over the ratios and the
        scale, each taking the first move (up, else down) that raises the
        score, until a pass moves nothing."""
        score = self.score(setting)
        for step in REFINE_STEPS:
            for _ in range(MAX_PASSES):
                moved = False
                for parameter in range(len(setting.pairs) + 1):
                    for sign in (1, -1):
                        trial = _moved(setting, parameter, sign * step)
                        trial_score = self.score(trial)
                        if trial_score > score:
                            setting, score, moved = trial, trial_score, True
                            break
                if not moved:
                    break
        return setting

    def _column(self, pair: AspectRatio, scale: float) -> np.ndarray:
        """Best IoU ``[N]`` of each box over the anchors of one ratio."""
        key = (pair, scale)
        if key not in self._columns:
            config = _apply(self.config, _Setting((pair,), scale),
                            self.num_scales)
            self._columns[key] = best_anchor_iou(self.boxes, config).iou
        return self._columns[key]


def _score(best_iou: np.ndarray, match_threshold: float) -> Score:
    return (float(np.mean(best_iou >= match_threshold)),
            float(np.mean(best_iou)))


def _moved(setting: _Setting, parameter: int, step: float) -> _Setting:
    """``setting`` with one parameter times ``2**step``: ratio ``parameter``
    (its w/h, keeping its area) or, for ``parameter == len(pairs)``, the
    scale."""
    if parameter == len(setting.pairs):
        return dataclasses.replace(setting, scale=setting.scale * 2.0 ** step)
    pairs = list(setting.pairs)
    w, h = pairs[parameter]
    factor = 2.0 ** (step / 2)
    pairs[parameter] = (w * factor, h / factor)
    return dataclasses.replace(setting, pairs=tuple(pairs))


def _kmeans_log_ratios(log_ratios: np.ndarray, k: int,
                       rng: np.random.Generator) -> np.ndarray:
    """k-means of log2(w/h) values ``[N]`` -> ``k`` sorted centroids: the
    run of least total distance from a quantile start and k-means++ starts."""
    values = np.sort(log_ratios)
    starts = [np.quantile(values, (np.arange(k) + 0.5) / k)]
    starts += [_plus_plus_start(values, k, rng) for _ in range(_KMEANS_RESTARTS)]
    return min((_lloyd(values, start) for start in starts),
               key=lambda c: _shape_distance(values, c).min(axis=1).sum())


def _lloyd(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Lloyd's iterations from sorted ``centroids`` on sorted ``values``:
    in one dimension a centroid's members are the run of values between
    the midpoints to its neighbours."""
    for _ in range(_KMEANS_ITERATIONS):
        splits = np.searchsorted(values, (centroids[1:] + centroids[:-1]) / 2)
        moved = np.array([np.median(run) if len(run) else centroid for
                          run, centroid in zip(np.split(values, splits),
                                               centroids)])
        if np.array_equal(moved, centroids):
            break
        centroids = moved
    return centroids


def _plus_plus_start(values: np.ndarray, k: int,
                     rng: np.random.Generator) -> np.ndarray:
    """k-means++: each next centroid drawn with probability proportional to
    the squared distance to the nearest one drawn so far."""
    centroids = [rng.choice(values)]
    for _ in range(k - 1):
        weights = _shape_distance(values, np.array(centroids)).min(axis=1) ** 2
        total = weights.sum()
        centroids.append(rng.choice(values, p=weights / total) if total > 0
                         else centroids[-1])
    return np.sort(centroids)


def _shape_distance(log_ratios: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``1 - IoU`` ``[N, k]`` between centred shapes of area 1 and log2
    ratios ``log_ratios`` ``[N]`` and ``centroids`` ``[k]``: shapes ``d``
    apart overlap on ``2**(-|d| / 2)`` of their area."""
    overlap = 2.0 ** (-np.abs(log_ratios[:, None] - centroids[None, :]) / 2)
    return 1.0 - overlap / (2.0 - overlap)


def _in_order_of(pairs: tuple[AspectRatio, ...],
                 reference: tuple[AspectRatio, ...]) -> tuple[AspectRatio, ...]:
    """``pairs`` ordered so their ratios rank as ``reference``'s do (same
    count only): each anchor ``a`` of a checkpoint's head then keeps a shape
    near the one it was trained for (the wide anchor stays wide)."""
    if len(pairs) != len(reference):
        return pairs
    by_ratio = sorted(pairs, key=lambda p: p[0] / p[1])
    ranks = np.argsort(np.argsort([w / h for w, h in reference], kind="stable"),
                       kind="stable")
    return tuple(by_ratio[rank] for rank in ranks)


def _count(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or value < 1):
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _apply(config: Config, setting: _Setting, num_scales: int) -> Config:
    return config.override({
        "aspect_ratios": [list(pair) for pair in setting.pairs],
        "anchor_scale": setting.scale, "num_scales": num_scales})


def _rounded(setting: _Setting) -> _Setting:
    return _Setting(tuple((round(float(w), 3), round(float(h), 3))
                          for w, h in setting.pairs),
                    round(float(setting.scale), 3))


def _usable_boxes(boxes: np.ndarray) -> np.ndarray:
    """The finite boxes of positive area, float64 ``[M, 4]``; raises if none."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ConfigError(f"boxes must be [N, 4] yxyx pixels, got shape "
                          f"{boxes.shape}")
    usable = boxes[np.all(np.isfinite(boxes), axis=1)]
    usable = usable[np.all(usable[:, 2:] > usable[:, :2], axis=1)]
    if not len(usable):
        raise ConfigError(f"no boxes with an area to fit anchors to (of "
                          f"{len(boxes)} given)")
    return usable
