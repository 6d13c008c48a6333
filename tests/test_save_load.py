"""save_pretrained -> from_pretrained, with the package and without it (trust_remote_code)."""

import json

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageClassification

from hub_cards.validation import run_python
from modeling_igpt import IGPTConfig, IGPTForCausalImageModeling, IGPTForImageClassification, IGPTModel


def test_round_trip_keeps_weights_and_config(tmp_path, tiny_model):
    model = tiny_model()  # random head: zero-initialised logits would compare equal whatever was loaded
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is IGPTForCausalImageModeling
    tokens = torch.randint(0, model.config.vocab_size - 1, (2, model.config.max_position_embeddings))
    assert torch.equal(model(tokens).logits, loaded(tokens).logits)
    assert type(AutoModel.from_pretrained(tmp_path)) is IGPTModel
    assert type(AutoConfig.from_pretrained(tmp_path)) is IGPTConfig


def test_saved_folder_is_self_contained(tmp_path, tiny_model):
    tiny_model(IGPTForImageClassification, num_labels=3).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedImageModeling", "AutoModelForImageClassification",
    }
    assert (tmp_path / "modeling_igpt.py").exists() and (tmp_path / "configuration_igpt.py").exists()
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(classifier) is IGPTForImageClassification and classifier.config.num_labels == 3


def test_remote_code_load_in_a_python_without_the_package(tmp_path, tiny_model):
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    tokens = torch.randint(0, model.config.vocab_size - 1, (1, model.config.max_position_embeddings))
    torch.save({"tokens": tokens, "logits": model(tokens).logits}, tmp_path / "expected.pt")
    script = f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageClassification
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert torch.equal(model(expected["tokens"]).logits, expected["logits"])
        generated = model.generate(max_new_tokens=4, do_sample=False)
        assert generated.shape == (1, 5)
        print("remote code OK", type(model).__name__)
        """
    result = run_python(script, hf_home=tmp_path / "hf")  # a Python without modeling_igpt and image_processing
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK IGPTForCausalImageModeling" in result.stdout
