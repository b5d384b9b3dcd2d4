"""TrainerConfig: the JSON contract between the operator (or local mode) and trainer images."""

import json

import pytest
from pydantic import ValidationError

from kubetune.api.v1alpha1 import Hyperparameters, TrainerConfig

CONFIG = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "TrainerConfig",
    "job": {"name": "support-bot", "namespace": "team-a", "uid": "6b1f0c1e"},
    "model": {"modelId": "meta-textgeneration-llama-3-2-1b", "source": "s3://models/llama/"},
    "data": {"train": "s3://datasets/support/train/", "validation": None},
    "hyperparameters": Hyperparameters(lora_r=16).model_dump(),
    "output": {"uri": "s3://artifacts/support-bot/"},
}


def test_json_round_trip_keeps_every_resolved_hyperparameter():
    config = TrainerConfig.model_validate(CONFIG)
    text = config.model_dump_json(by_alias=True)
    loaded = json.loads(text)
    assert set(loaded) == {
        "apiVersion",
        "kind",
        "job",
        "model",
        "data",
        "hyperparameters",
        "output",
        "trainer",  # every part unset here: chosen by the trainer
        "maxAttempts",  # null here: no limit (local mode)
    }
    assert loaded["model"] == CONFIG["model"]
    assert loaded["hyperparameters"] == Hyperparameters(lora_r=16).model_dump()
    assert TrainerConfig.model_validate_json(text) == config


def test_hyperparameters_must_be_complete_and_valid():
    broken = json.loads(json.dumps(CONFIG))
    broken["hyperparameters"]["lora_dropout"] = 2
    with pytest.raises(ValidationError, match="lora_dropout"):
        TrainerConfig.model_validate(broken)


def test_unknown_keys_are_refused_so_typos_surface():
    with pytest.raises(ValidationError, match="secretKey"):
        TrainerConfig.model_validate({**CONFIG, "output": {"uri": "s3://a-b/c", "secretKey": "x"}})


def test_every_hyperparameter_must_be_spelled_out():
    # A trainer image never applies defaults of its own: a missing key is an error.
    incomplete = json.loads(json.dumps(CONFIG))
    del incomplete["hyperparameters"]["lora_r"]
    with pytest.raises(ValidationError, match="hyperparameters.lora_r\n  Field required"):
        TrainerConfig.model_validate(incomplete)
    schema = TrainerConfig.model_json_schema(by_alias=True)
    resolved = schema["$defs"]["ResolvedHyperparameters"]
    assert set(resolved["required"]) == set(Hyperparameters.model_fields)
