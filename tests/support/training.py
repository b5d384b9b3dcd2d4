"""A small learnable fine-tuning job on disk, and ways to run the real trainer on it: in this
process, as `python -m kubetune_trainer.train`, or under torchrun with several ranks."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from kubetune.api.v1alpha1 import Hyperparameters, ProgressReport, TrainerConfig
from kubetune.api.v1alpha1.outputs import PROGRESS
from kubetune_trainer.runtime import Runtime
from tests.support.tiny_models import build_tiny_llama, build_tiny_t5, build_tokenizer

WORDS = "the cat dog sat ran on a mat log red blue big small quickly slowly".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # A learnable pattern: "the <adj> <noun> <verb> on a <noun>".
    return [
        f"the {rng.choice(['red', 'blue', 'big', 'small'])} {rng.choice(['cat', 'dog'])} "
        f"{rng.choice(['sat', 'ran'])} on a {rng.choice(['mat', 'log'])}"
        for _ in range(n)
    ]


def make_job(root: Path, samples: int = 400) -> Path:
    """root/model (tiny Llama + tokenizer) and root/data (instruction JSONL + template.json)."""
    texts = sentences(samples)
    model_dir = root / "model"
    tokenizer = build_tokenizer(texts + WORDS, model_dir)
    # A wide init lets the frozen random head express confident logits, as a pretrained one can.
    build_tiny_llama(model_dir, len(tokenizer), tokenizer=tokenizer, initializer_range=0.5)
    write_instruction_data(root / "data", texts)
    return root


def config_for(root: Path, output: str = "out", uid: str = "uid-1", **hyperparameters):
    hp = {
        "instruction_tuned": True,
        "epoch": 3,
        "learning_rate": 2e-3,
        "lora_r": 8,
        "per_device_train_batch_size": 4,
        "max_input_length": 32,
        **hyperparameters,
    }
    return TrainerConfig.model_validate(
        {
            "job": {"name": "tiny", "namespace": "test", "uid": uid},
            "model": {"modelId": "tiny-llama", "source": f"file://{root}/model"},
            "data": {"train": f"file://{root}/data"},
            "hyperparameters": Hyperparameters(**hp).model_dump(),
            "output": {"uri": f"file://{root}/{output}"},
        }
    )


def runtime(root: Path) -> Runtime:
    return Runtime.from_env({"KUBETUNE_SCRATCH": str(root / "scratch")})


def trainer_command(config: TrainerConfig, root: Path, nproc: int = 1) -> list[str]:
    """The command a pod runs: torchrun for several ranks, else the module itself."""
    path = root / f"config-{config.job.uid}-{config.output.uri.rsplit('/', 1)[-1]}.json"
    path.write_text(config.model_dump_json(by_alias=True))
    trainer = ["-m", "kubetune_trainer.train", "--config", str(path)]
    if nproc == 1:
        return [sys.executable, *trainer]
    # --standalone: a rendezvous on a free local port, as one PyTorchJob pod with nproc ranks.
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [sys.executable, *launcher, *trainer]


def trainer_env(root: Path, scratch: str = "scratch") -> dict[str, str]:
    """A clean environment: only what a trainer pod would have (plus the AWS_* of the test)."""
    keep = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    return {**keep, "PATH": os.environ.get("PATH", ""), "KUBETUNE_SCRATCH": str(root / scratch)}


def made_a_step(out: Path) -> bool:
    """The trainer writing to the folder `out` has made its first optimizer step, so a stop
    signal now ends it at a step boundary with a checkpoint (progress.json says so)."""
    try:
        report = ProgressReport.model_validate_json((out / PROGRESS).read_text())
    except (OSError, ValueError):  # not there yet, or caught mid-replace
        return False
    return report.state == "training" and report.step >= 1


def run_trainer(config, root: Path, nproc: int = 1, timeout: float = 300):
    return subprocess.run(
        trainer_command(config, root, nproc),
        capture_output=True,
        text=True,
        env=trainer_env(root),
        timeout=timeout,
    )


def make_t5_job(root: Path, samples: int = 200) -> Path:
    """root/model (tiny T5 + tokenizer) and root/data, as make_job: a seq2seq (Flan-T5) job."""
    texts = sentences(samples)
    model_dir = root / "model"
    tokenizer = build_tokenizer(texts + WORDS, model_dir, style="t5")
    build_tiny_t5(model_dir, len(tokenizer), tokenizer=tokenizer)
    write_instruction_data(root / "data", texts)
    return root


def make_chat_job(root: Path, samples: int = 200) -> Path:
    """root/model (tiny Llama whose tokenizer has a ChatML template) and root/data/chat.jsonl:
    one conversation per sentence, the assistant answering with the sentence."""
    from kubetune_trainer.formats.chat_templates import CHATML

    texts = sentences(samples)
    model_dir = root / "model"
    tokenizer = build_tokenizer(texts + WORDS, model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML.jinja
    tokenizer.save_pretrained(model_dir)
    build_tiny_llama(model_dir, len(tokenizer), tokenizer=tokenizer, initializer_range=0.5)
    data = root / "data"
    data.mkdir()
    records = [
        {"messages": [{"role": "user", "content": "describe an animal"},
                      {"role": "assistant", "content": text}]}
        for text in texts
    ]  # fmt: skip
    (data / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def write_instruction_data(data: Path, texts: list[str]) -> None:
    data.mkdir()
    (data / "train.jsonl").write_text(
        "".join(
            json.dumps({"instruction": "describe an animal", "context": "", "response": t}) + "\n"
            for t in texts
        )
    )
    (data / "template.json").write_text(
        json.dumps({"prompt": "{instruction}:", "completion": " {response}"})
    )


def with_parts(config: TrainerConfig, **trainer) -> TrainerConfig:
    """config with spec.trainer parts, e.g. dataFormat={"name": "chat"}."""
    return TrainerConfig.model_validate({**config.model_dump(by_alias=True), "trainer": trainer})


def hold_out(root: Path, n: int, name: str = "held") -> Path:
    """Move the first n records of root/data/train.jsonl to root/<name>/<name>.jsonl (a
    validation or test channel of unseen records); returns that folder."""
    train = root / "data" / "train.jsonl"
    lines = train.read_text().splitlines(keepends=True)
    folder = root / name
    folder.mkdir()
    (folder / f"{name}.jsonl").write_text("".join(lines[:n]))
    train.write_text("".join(lines[n:]))
    return folder


def with_data(config: TrainerConfig, **channels: Path) -> TrainerConfig:
    """config with data channels set to local folders, e.g. validation=..., test=..."""
    data = {**config.data.model_dump(), **{k: f"file://{v}" for k, v in channels.items()}}
    return config.model_copy(update={"data": type(config.data).model_validate(data)})
