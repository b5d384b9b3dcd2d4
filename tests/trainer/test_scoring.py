"""The test channel on CPU, tiny models, real files: scored after training with the best
epoch's weights (the same records as validation give the best epoch's validation loss),
greedy sample answers in samples.jsonl, and test data problems found before training."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from kubetune.api.v1alpha1 import Hyperparameters, ProgressReport, SampleAnswer
from kubetune.api.v1alpha1.outputs import MANIFEST, PROGRESS, SAMPLES
from kubetune_trainer import inputs
from kubetune_trainer.formats import FORMATS, Channels, DataError, DataFormat
from kubetune_trainer.formats.samples import IGNORE_INDEX as I
from kubetune_trainer.formats.samples import Sample, Splits
from kubetune_trainer.registry import Chosen, NoOptions, PartError
from kubetune_trainer.scoring import ANSWERED, REFERENCE_TOKENS, prompt_and_reference
from kubetune_trainer.train import train
from tests.support.training import (
    config_for,
    hold_out,
    make_job,
    make_t5_job,
    runtime,
    sentences,
    with_data,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more; the machine is shared
    yield
    torch.set_num_threads(threads)


def answers(out: Path) -> list[SampleAnswer]:
    lines = (out / SAMPLES).read_text().splitlines()
    return [SampleAnswer.read(line, f"{out / SAMPLES}, line {n}") for n, line in enumerate(lines)]


def listed(out: Path) -> set[str]:
    return {f["path"] for f in json.loads((out / MANIFEST).read_text())["files"]}


def test_instruction_test_loss_uses_the_best_epochs_weights_not_the_last(tmp_path):
    """A constant learning rate of 1.0 overshoots in the third epoch, so the best epoch is
    the second: the test channel (the validation records again) must score its loss."""
    root = make_job(tmp_path, samples=80)
    held = hold_out(root, 16)
    config = config_for(root, epoch=3, learning_rate=1.0, lr_scheduler_type="constant")
    config = with_data(config, validation=held, test=held)
    metrics = train(config, runtime(root))

    losses = [e.eval_loss for e in metrics.epochs]
    assert metrics.best_epoch == 2 and losses[2] > losses[1], losses  # the premise
    assert metrics.test_loss == pytest.approx(metrics.eval_loss, rel=1e-6), losses
    assert metrics.test_perplexity == pytest.approx(math.exp(metrics.test_loss))
    assert metrics.test_samples == 16

    out = root / "out"
    assert SAMPLES in listed(out)
    found = answers(out)
    assert [a.index for a in found] == list(range(ANSWERED))
    records = [json.loads(line) for line in (held / "held.jsonl").read_text().splitlines()]
    for answer, record in zip(found, records, strict=False):
        assert answer.prompt == "describe an animal:"  # the template's prompt, BOS left out
        assert answer.reference.split() == record["response"].split()
        assert isinstance(answer.answer, str)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_loss"] == metrics.test_loss and saved["test_samples"] == 16


def test_no_test_channel_means_no_test_figures_and_no_samples_file(tmp_path):
    root = make_job(tmp_path, samples=40)
    metrics = train(config_for(root, epoch=1, merge_weights=False), runtime(root))
    assert (metrics.test_loss, metrics.test_perplexity, metrics.test_samples) == (None,) * 3
    assert not (root / "out" / SAMPLES).exists() and SAMPLES not in listed(root / "out")


def test_domain_adaptation_blocks_prompt_with_their_first_half(tmp_path):
    root = make_job(tmp_path, samples=40)  # its model and tokenizer; the data is text here
    text = tmp_path / "text"
    text.mkdir()
    (text / "train.txt").write_text("\n".join(sentences(120)))
    test = tmp_path / "test"
    test.mkdir()
    (test / "test.txt").write_text("\n".join(sentences(30, seed=1)))
    config = config_for(root, instruction_tuned=False, epoch=1, merge_weights=False)
    config = with_data(config, train=text, validation=test, test=test)
    metrics = train(config, runtime(root))

    assert metrics.test_loss == pytest.approx(metrics.eval_loss, rel=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    blocks = (metrics.test_samples, len(answers(root / "out")))
    assert blocks[0] >= ANSWERED and blocks[1] == ANSWERED, blocks
    for answer in answers(root / "out"):
        # max_input_length 32: 16 tokens of prompt, 16 of reference
        assert len(tokenizer(answer.reference, add_special_tokens=False)["input_ids"]) <= 16
        assert answer.prompt and answer.reference


def test_seq2seq_t5_scores_the_test_channel_and_answers_from_the_encoder(tmp_path):
    root = make_t5_job(tmp_path, samples=60)
    held = hold_out(root, 12)
    config = config_for(root, epoch=1, merge_weights=True)
    metrics = train(with_data(config, validation=held, test=held), runtime(root))

    assert metrics.test_loss == pytest.approx(metrics.eval_loss, rel=1e-6)
    assert metrics.test_samples == 12
    found = answers(root / "out")
    assert len(found) == ANSWERED and all(a.prompt == "describe an animal:" for a in found)
    assert {"merged/model.safetensors", SAMPLES} <= listed(root / "out")  # merged after


def test_a_broken_test_file_fails_before_training_naming_the_file_and_line(tmp_path):
    root = make_job(tmp_path, samples=40)
    test = tmp_path / "test"
    test.mkdir()
    (test / "t.jsonl").write_text('{"instruction": "a", "response": "b"}\n{"instruction": \n')
    config = with_data(config_for(root, epoch=1), test=test)
    with pytest.raises(DataError) as raised:
        train(config, runtime(root))
    assert str(raised.value).startswith(f"file://{test}/t.jsonl, line 2: invalid JSON")
    progress = ProgressReport.read((root / "out" / PROGRESS).read_text(), PROGRESS)
    assert progress.state == "starting" and progress.step == 0  # nothing trained
    assert not (root / "out" / "checkpoints").exists()


def ignores_test(channels, hp, tokenizer, options) -> Splits:
    """A plug-in format written before test channels: train and validation only."""
    return FORMATS.get("instruction", "test").load(
        Channels(channels.train, channels.validation), hp, tokenizer, options
    )


def test_a_format_that_does_not_read_the_test_channel_is_refused(tmp_path):
    root = make_job(tmp_path, samples=20)
    config = with_data(config_for(root), test=root / "data")
    part = DataFormat(name="old-format", options=NoOptions, load=ignores_test)
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    channels = Channels(root / "data", None, root / "data")
    hp = Hyperparameters(instruction_tuned=True, max_input_length=32)
    with pytest.raises(PartError) as raised:
        inputs.load_data(Chosen(part, NoOptions()), channels, config, hp, tokenizer)
    assert str(raised.value).startswith(
        "spec.data.test: the data format 'old-format' does not read a test channel"
    )


@pytest.mark.parametrize(
    "sample, prompt, reference",
    [
        # instruction: prompt, then the completion and EOS (2)
        (Sample([1, 5, 6, 7, 8, 2], [I, I, I, 7, 8, 2]), [1, 5, 6], [7, 8, 2]),
        # chat, two assistant turns: the first turn is the reference
        (Sample([5, 6, 7, 8, 9, 10], [I, 6, 7, I, 9, 10]), [5], [6, 7]),
        # domain-adaptation block, all labels: cut in half
        (Sample([3, 4, 5, 6, 7], [3, 4, 5, 6, 7]), [3, 4], [5, 6, 7]),
        # no label at all: no reference, so no answer
        (Sample([3, 4, 5], [I, I, I]), [3, 4, 5], []),
    ],
    ids=["instruction", "chat", "domain", "unlabelled"],
)
def test_prompt_and_reference(sample, prompt, reference):
    assert prompt_and_reference(sample) == (prompt, reference)


def test_a_long_reference_is_cut():
    long = list(range(10, 10 + 2 * REFERENCE_TOKENS))
    prompt, reference = prompt_and_reference(Sample([1, *long], [I, *long]))
    assert prompt == [1] and reference == long[:REFERENCE_TOKENS]
