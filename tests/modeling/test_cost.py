"""What pyramid levels cost: ``model_inspect.py --runmode=dry`` against two
separately built networks, and when there is nothing to compare."""
from __future__ import annotations

import re

import model_inspect
from efficientdet_tf.config import get_config
from efficientdet_tf.modeling.cost import levels_cost, preset_levels
from efficientdet_tf.modeling.fpn_topologies import bifpn_topology
from efficientdet_tf.modeling.model import build_model
from efficientdet_tf.utils.profiling import count_flops, count_params

SMALL = {"image_size": 128, "num_classes": 3, "fpn_cell_repeats": 1,
         "box_class_repeats": 1}


def test_dry_run_prints_what_level_2_adds(capsys):
    """The printed deltas are those of a P2 network and the same network at
    3..7, each built and measured on its own."""
    hparams = ",".join(f"{k}={v}" for k, v in {**SMALL, "min_level": 2}.items())
    assert model_inspect.main(["--runmode=dry", f"--hparams={hparams}"]) == 0
    printed = capsys.readouterr().out
    line = re.search(r"^levels 2\.\.7 against the preset's 3\.\.7: "
                     r"([+-][\d,]+) params \(([+-][\d.]+) %\), "
                     r"([+-][\d.]+) GFLOPs \(([+-][\d.]+) %\)$",
                     printed, re.MULTILINE)
    assert line, printed

    p2 = build_model(get_config("efficientdet-d0", {**SMALL, "min_level": 2}))
    p3 = build_model(get_config("efficientdet-d0", SMALL))
    params = count_params(p2) - count_params(p3)
    flops = count_flops(p2) - count_flops(p3)
    assert params > 0 and flops > 0
    assert int(line.group(1).replace(",", "")) == params
    assert line.group(2) == f"{100 * params / count_params(p3):+.1f}"
    assert line.group(3) == f"{flops / 1e9:+.3f}"
    assert line.group(4) == f"{100 * flops / count_flops(p3):+.1f}"


def test_nothing_to_compare_at_the_presets_levels_or_with_explicit_nodes():
    """The reference is the named model's levels (D7x has a level 8); a
    user's fpn_config nodes exist only for their own levels."""
    assert preset_levels(get_config("efficientdet-d0")) == (3, 7)
    assert preset_levels(get_config("efficientdet-d7x")) == (3, 8)
    assert levels_cost(get_config("efficientdet-d0", SMALL)) is None
    nodes = [node.as_config() for node in bifpn_topology(2, 7)]
    assert levels_cost(get_config("efficientdet-d0", {
        **SMALL, "min_level": 2, "fpn_config": {"nodes": nodes}})) is None
