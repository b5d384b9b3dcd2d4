"""Hyperparameters: JumpStart defaults, rules, and overrides that default nothing."""

import pytest
from pydantic import ValidationError

from kubetune.api.v1alpha1 import HyperparameterOverrides, Hyperparameters

JUMPSTART_DEFAULTS = {
    "epoch": 5,
    "learning_rate": 1e-4,
    "instruction_tuned": False,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 1,
    "max_train_samples": -1,
    "max_val_samples": -1,
    "max_input_length": -1,
    "validation_split_ratio": 0.2,
    "train_data_split_seed": 0,
    "preprocessing_num_workers": None,
    "lora_r": 8,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "int8_quantization": False,
    "enable_fsdp": False,
}


def test_jumpstart_defaults():
    resolved = Hyperparameters().model_dump()
    assert {name: resolved[name] for name in JUMPSTART_DEFAULTS} == JUMPSTART_DEFAULTS


def test_overrides_have_the_same_fields_and_default_nothing():
    assert list(HyperparameterOverrides.model_fields) == list(Hyperparameters.model_fields)
    assert HyperparameterOverrides().model_dump(exclude_none=True) == {}


def test_every_field_is_described():
    assert [n for n, f in Hyperparameters.model_fields.items() if not f.description] == []


@pytest.mark.parametrize("model", [Hyperparameters, HyperparameterOverrides])
@pytest.mark.parametrize(
    "field, value",
    [
        ("epoch", 0),
        ("epoch", "5"),
        ("learning_rate", 0),
        ("learning_rate", "1e-4"),
        ("instruction_tuned", "yes"),
        ("instruction_tuned", 1),
        ("per_device_train_batch_size", 0),
        ("per_device_eval_batch_size", 0),
        ("max_train_samples", 0),
        ("max_val_samples", -2),
        ("max_input_length", 0),
        ("validation_split_ratio", 0),
        ("validation_split_ratio", 1),
        ("train_data_split_seed", 1.5),
        ("preprocessing_num_workers", 0),
        ("lora_r", 0),
        ("lora_alpha", 0),
        ("lora_dropout", 1),
        ("lora_dropout", -0.1),
        ("int8_quantization", "true"),
        ("enable_fsdp", None),
        ("no_such_hyperparameter", 1),
    ],
)
def test_each_rule_rejects(model, field, value):
    with pytest.raises(ValidationError) as err:
        model.model_validate({field: value})
    assert err.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize("model", [Hyperparameters, HyperparameterOverrides])
def test_int8_and_fsdp_are_exclusive(model):
    with pytest.raises(ValidationError, match="int8_quantization and enable_fsdp"):
        model.model_validate({"int8_quantization": True, "enable_fsdp": True})
    assert model.model_validate({"int8_quantization": True, "enable_fsdp": False})


def test_boundaries_that_are_allowed():
    h = Hyperparameters.model_validate(
        {
            "lora_dropout": 0,
            "max_train_samples": -1,
            "max_val_samples": 1,
            "learning_rate": 1,
            "validation_split_ratio": 0.999,
            "preprocessing_num_workers": 1,
        }
    )
    assert h.learning_rate == 1.0 and isinstance(h.learning_rate, float)
