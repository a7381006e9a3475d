"""Which official variable names mean the same thing across pyramid levels.

A checkpoint made for levels 3..7 (every official one) and a model with
other levels (``min_level: 2`` for small objects) share most names, but not
every shared name is the same variable:

* The backbone, the heads' convolutions (shared by all levels) and
  ``resample_p<l>`` (the levels above C5, each pooled from the one below)
  do not depend on the levels.
* A head batch norm ``<head>-<i>-bn-<l>`` belongs to level ``l``: it has a
  counterpart exactly when both pyramids have level ``l``.
* BiFPN names do not name roles. automl numbers a cell's nodes in creation
  order (``fnode<j>``) and its feature maps by count (``op_after_combine<n>``,
  ``resample_<i>_<input>_<n>``, ``n`` = number of levels + ``j``), so once
  the levels differ an equal name can be another node: with levels 2..7,
  ``fnode4`` is the new level-2 node of the top-down path, while in the
  official 3..7 it is level 4's bottom-up node (both with scalar ``WSM``
  and ``WSM_1``: same names, same shapes). Levels 2..6, as many as 3..7,
  share nearly every BiFPN name with it, each for a node a level lower.
  The first cell's top-down nodes on shared levels do compute the same
  thing under both numberings, but every later node sees other inputs, so
  the whole BiFPN is held back rather than a fragment of it.

An official archive records its levels only through the head batch-norm
names, so those are what :func:`pyramid_levels` reads.
"""
from __future__ import annotations

import re
from typing import Collection, Iterable

FPN_SCOPE = "fpn_cells"
_HEAD_BN = re.compile(r"^(?:class|box)_net/(?:class|box)-\d+-bn-(\d+)/")
_RESAMPLE = re.compile(r"^resample_p(\d+)/")


def pyramid_levels(names: Iterable[str]) -> tuple[int, ...]:
    """The levels, ascending, whose head batch norms are among ``names``;
    empty when there is no head (an ImageNet backbone checkpoint)."""
    return tuple(sorted({int(m.group(1)) for name in names
                         if (m := _HEAD_BN.match(name))}))


def tied_to_other_levels(name: str, levels: Collection[int]) -> bool:
    """Whether model variable ``name`` cannot take the same-named variable of
    a checkpoint made for pyramid ``levels`` (other than the model's): a
    BiFPN variable (its name stands for another node there), or a head batch
    norm or ``resample_p<l>`` of a level the checkpoint does not have."""
    if name.startswith(FPN_SCOPE + "/"):
        return True
    own = _HEAD_BN.match(name) or _RESAMPLE.match(name)
    return own is not None and int(own.group(1)) not in levels


def level_span(levels: Collection[int]) -> str:
    """``2..7`` for consecutive levels, else the list (``3, 5``)."""
    ordered = sorted(levels)
    if ordered and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}..{ordered[-1]}"
    return ", ".join(map(str, ordered))


def layer_scopes(names: Iterable[str]) -> list[str]:
    """The layers ``names`` belong to, for a message a person reads: the
    whole BiFPN as one entry (first: it is most of them), other variables
    by their layer path."""
    scopes = {FPN_SCOPE if name.startswith(FPN_SCOPE + "/")
              else name.rpartition("/")[0] for name in names}
    return sorted(scopes, key=lambda scope: (scope != FPN_SCOPE, scope))
