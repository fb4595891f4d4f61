"""The accelerate launch configurations in configs/accelerate/ (docs/training.md, "Paper scale").

Each loads with accelerate's own loader (an unknown key is an error there), is quoted with its
launch line in docs/training.md, and the FSDP2 one names a decoder layer class that accelerate
finds inside our model wrapper (which has no `_no_split_modules` of its own).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_there_is_a_config_for_one_gpu_one_node_fsdp2_and_several_nodes():
    assert {p.stem for p in CONFIGS} == {
        "one_gpu",
        "one_node_ddp",
        "one_node_fsdp2",
        "two_node_ddp",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_config_loads_with_accelerates_loader_and_is_documented(path: Path):
    config = load_config_from_file(str(path))
    assert config.mixed_precision == "bf16"
    launch = f"accelerate launch --config_file configs/accelerate/{path.name}"
    assert launch in path.read_text() and launch in (ROOT / "docs" / "training.md").read_text()


def test_ddp_is_the_default_and_fsdp2_shards_decoder_layers_without_its_own_checkpointing():
    configs = {p.stem: load_config_from_file(str(p)) for p in CONFIGS}
    assert configs["one_node_ddp"].distributed_type == DistributedType.MULTI_GPU
    assert configs["two_node_ddp"].num_machines == 2
    fsdp = configs["one_node_fsdp2"]
    assert fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    # ours re-enters TMoLE's routing in the recompute; FSDP's would not
    assert fsdp.fsdp_config["fsdp_activation_checkpointing"] is False


def test_accelerate_finds_the_fsdp2_layer_class_inside_our_model():
    import torch
    from accelerate.utils.dataclasses import get_module_class_from_name
    from transformers import MistralConfig, MistralForCausalLM

    from recfound.model.unified import RecFoundModel

    name = load_config_from_file(str(ROOT / "configs/accelerate/one_node_fsdp2.yaml")).fsdp_config[
        "fsdp_transformer_layer_cls_to_wrap"
    ]
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
    with torch.device("meta"):  # no weights: only the module tree matters
        lm = MistralForCausalLM(MistralConfig(num_hidden_layers=2, num_key_value_heads=2, **shape))
    assert get_module_class_from_name(RecFoundModel(lm), name) is not None
