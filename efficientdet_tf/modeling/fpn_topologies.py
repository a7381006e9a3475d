"""FPN topologies as data: which nodes a feature-network cell fuses.

A topology is a list of :class:`FNodeSpec` ("output level <- inputs by node
id"). Node ids 0..L-1 are the input levels min..max; each new node appends
one id, and a level's output is its newest node. The generic cell in
:mod:`efficientdet_tf.modeling.bifpn` walks such a list, so an FPN variant
is a new entry in :data:`FPN_TOPOLOGIES` (selected by ``fpn_name``) or an
explicit node list (``fpn_config``), never new layer code.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from efficientdet_tf.config import ConfigError, choose


@dataclasses.dataclass(frozen=True)
class FNodeSpec:
    """One fused node: the level it lives on and the node ids it fuses."""
    feat_level: int
    inputs_offsets: tuple[int, ...]

    def as_config(self) -> dict[str, Any]:
        """automl's node form, plain data for layer configs and YAML."""
        return {"feat_level": self.feat_level,
                "inputs_offsets": list(self.inputs_offsets)}

    @classmethod
    def from_config(cls, node: "FNodeSpec | Mapping[str, Any]") -> "FNodeSpec":
        """A spec from :meth:`as_config`'s form (a rebuilt layer's config)."""
        if isinstance(node, FNodeSpec):
            return node
        return cls(int(node["feat_level"]), tuple(node["inputs_offsets"]))


class _Graph:
    """A topology being written: appends nodes, remembers every node id of
    each level (oldest first, the input level's id at index 0)."""

    def __init__(self, min_level: int, max_level: int):
        self.levels = list(range(min_level, max_level + 1))
        self.ids = {level: [i] for i, level in enumerate(self.levels)}
        self.nodes: list[FNodeSpec] = []

    def add(self, level: int, inputs: Sequence[int]) -> None:
        self.ids[level].append(len(self.levels) + len(self.nodes))
        self.nodes.append(FNodeSpec(level, tuple(inputs)))

    def first(self, level: int) -> int:
        return self.ids[level][0]

    def last(self, level: int) -> int:
        return self.ids[level][-1]


def _add_bifpn_paths(graph: _Graph) -> None:
    """A top-down pass (max-1 .. min) fusing each level with the one above,
    then a bottom-up pass (min+1 .. max) fusing every node of a level with
    the newest node of the level below."""
    for level in reversed(graph.levels[:-1]):
        graph.add(level, [graph.last(level), graph.last(level + 1)])
    for level in graph.levels[1:]:
        graph.add(level, [*graph.ids[level], graph.last(level - 1)])


def bifpn_topology(min_level: int, max_level: int) -> list[FNodeSpec]:
    """The BiFPN graph of the EfficientDet paper (automl's ``bifpn``)."""
    graph = _Graph(min_level, max_level)
    _add_bifpn_paths(graph)
    return graph.nodes


def qufpn_topology(min_level: int, max_level: int) -> list[FNodeSpec]:
    """automl's quad FPN: the BiFPN paths (A), a second pair of paths (B)
    starting again from the inputs, bottom-up first then top-down, and per
    level a last node fusing A's and B's outputs.

    automl's data names ``fastattn`` for those last nodes, but both its
    implementations fuse every node of a cell with the cell's one method; so
    does this one.
    """
    graph = _Graph(min_level, max_level)
    _add_bifpn_paths(graph)
    path_a = {level: graph.last(level) for level in graph.levels}
    lowest = graph.levels[0]
    for level in graph.levels[1:]:
        below = graph.first(lowest) if level - 1 == lowest else graph.last(level - 1)
        graph.add(level, [graph.first(level), below])
    for level in reversed(graph.levels[1:-1]):
        graph.add(level, [graph.first(level), graph.last(level),
                          graph.last(level + 1)])
    graph.add(lowest, [graph.first(lowest), graph.last(lowest + 1)])
    for level in reversed(graph.levels):
        graph.add(level, [path_a[level], graph.last(level)])
    return graph.nodes


FPN_TOPOLOGIES: dict[str, Callable[[int, int], list[FNodeSpec]]] = {
    "bifpn": bifpn_topology,
    "bifpn_dyn": bifpn_topology,  # automl's legacy name for the same graph
    "qufpn": qufpn_topology,
}


def fpn_topology(fpn_name: str, fpn_config: Mapping[str, Any] | None,
                 min_level: int, max_level: int) -> list[FNodeSpec]:
    """The explicit ``fpn_config`` nodes when given (they win over the name,
    as in automl), else the variant registered as ``fpn_name``."""
    if fpn_config:
        return topology_from_nodes(fpn_config["nodes"], min_level, max_level)
    return choose(FPN_TOPOLOGIES, "fpn_name", fpn_name)(min_level, max_level)


def topology_from_nodes(nodes: Sequence[Mapping[str, Any]], min_level: int,
                        max_level: int) -> list[FNodeSpec]:
    """A user's node list (``fpn_config.nodes``, automl's form) as specs.

    Checked here rather than failing deep in Keras: a node may only fuse
    nodes that exist before it, and every level needs a node because a
    level's newest node is its output (the inputs have backbone widths).
    """
    levels = range(min_level, max_level + 1)
    specs = []
    for index, node in enumerate(nodes):
        where = f"fpn_config.nodes[{index}]"
        if not isinstance(node, Mapping) or set(node) != {"feat_level",
                                                          "inputs_offsets"}:
            raise ConfigError(f"{where}: expected {{feat_level: L, "
                              f"inputs_offsets: [ids]}}, got {node!r}")
        level, offsets = node["feat_level"], node["inputs_offsets"]
        if level not in levels:
            raise ConfigError(f"{where}: feat_level {level!r} is outside "
                              f"min_level..max_level ({min_level}..{max_level})")
        known = len(levels) + index
        if (not isinstance(offsets, (list, tuple)) or not offsets
                or any(type(i) is not int or not 0 <= i < known for i in offsets)):
            raise ConfigError(
                f"{where}: inputs_offsets must list ids of earlier nodes, "
                f"0..{known - 1} (0..{len(levels) - 1} are the input levels "
                f"{min_level}..{max_level}), got {offsets!r}")
        specs.append(FNodeSpec.from_config(node))
    missing = sorted(set(levels) - {spec.feat_level for spec in specs})
    if missing:
        raise ConfigError(f"fpn_config.nodes has no node for level(s) "
                          f"{missing}: every level's newest node is its output")
    return specs
