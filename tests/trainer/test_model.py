"""Model loading: LoRA target modules exist in each architecture; int8 refuses CPU clearly."""

import pytest
import torch
import transformers

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.model import TARGET_MODULES, ModelError, load_model, target_modules

TINY = {"vocab_size": 64, "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1}
CONFIGS = {
    "llama": transformers.LlamaConfig(**TINY, intermediate_size=64, num_key_value_heads=2),
    "mistral": transformers.MistralConfig(**TINY, intermediate_size=64, num_key_value_heads=2),
    "mixtral": transformers.MixtralConfig(
        **TINY, intermediate_size=64, num_key_value_heads=2, num_local_experts=2
    ),
    "qwen2": transformers.Qwen2Config(**TINY, intermediate_size=64, num_key_value_heads=2),
    "gemma": transformers.GemmaConfig(
        **TINY, intermediate_size=64, head_dim=8, num_key_value_heads=1
    ),
    "gptj": transformers.GPTJConfig(vocab_size=64, n_embd=32, n_head=4, n_layer=1, rotary_dim=4),
    "falcon": transformers.FalconConfig(**TINY),
    "gpt_neox": transformers.GPTNeoXConfig(**TINY, intermediate_size=64),
    "bloom": transformers.BloomConfig(vocab_size=64, hidden_size=32, n_head=4, n_layer=1),
    "gpt2": transformers.GPT2Config(vocab_size=64, n_embd=32, n_head=4, n_layer=1),
}


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_default_targets_exist_in_the_architecture(model_type, tmp_path):
    config = CONFIGS[model_type]
    assert config.model_type == model_type
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    model = load_model(tmp_path, Hyperparameters(lora_r=2), torch.device("cpu"))
    adapted = {
        name.rsplit(".", 2)[-2] for name, _ in model.named_modules() if name.endswith("lora_A")
    }
    assert adapted == set(TARGET_MODULES[model_type])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_every_required_architecture_has_defaults():
    required = {
        "llama",
        "mistral",
        "mixtral",
        "falcon",
        "gpt_neox",
        "gptj",
        "gpt2",
        "bloom",
        "gemma",
        "qwen2",
    }
    assert required <= set(TARGET_MODULES)


def test_override_and_unknown_architecture():
    hp = Hyperparameters(lora_target_modules=["q_proj"])
    assert target_modules("anything", hp) == ["q_proj"]
    with pytest.raises(ModelError, match="set the lora_target_modules hyperparameter"):
        target_modules("mamba", Hyperparameters())


def test_int8_on_cpu_is_a_clear_error(tmp_path):
    CONFIGS["llama"].save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="int8_quantization needs a CUDA GPU"):
        load_model(tmp_path, Hyperparameters(int8_quantization=True), torch.device("cpu"))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path, Hyperparameters(), torch.device("cpu"))
