"""`kubetune generate OUTPUT_URI`: a finished job's tuned model answers prompts rendered exactly
as its training records were (its template, its chat template), beside its base model's
answers; from a folder and from S3; clear errors for unfinished jobs and bad options."""

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from kubetune.api.v1alpha1 import Hyperparameters, PromptFormat
from kubetune.cli.main import main
from kubetune.local import generation, prompts
from kubetune.storage import open_store
from kubetune_trainer.formats import FORMATS, Channels
from kubetune_trainer.formats.samples import IGNORE_INDEX
from kubetune_trainer.train import train
from tests.support.data_files import write_jsonl
from tests.support.s3 import make_bucket, s3_endpoint_fixture, s3_server_fixture  # noqa: F401
from tests.support.training import config_for, make_chat_job, make_job, runtime

ANSWER = "the red cat sat on a mat"
QUESTION = {"instruction": "describe the cat", "context": "", "response": ANSWER}
# Words the tiny tokenizer knows, in a question it was not trained on.
HELD_OUT = {"instruction": "describe the dog", "context": "", "response": ANSWER}


@pytest.fixture(scope="module")
def chat_job(tmp_path_factory) -> Path:
    """A tiny model with a ChatML tokenizer, instruction-tuned through its chat template to
    answer one way: enough epochs that its greedy answer is the trained one."""
    root = make_chat_job(tmp_path_factory.mktemp("generate"), samples=20)
    shutil.rmtree(root / "data")
    write_jsonl(root / "data", "train.jsonl", [QUESTION] * 40)
    config = config_for(
        root, chat_template="tokenizer", epoch=10, learning_rate=2e-2, max_input_length=64
    )
    train(config, runtime(root))
    write_jsonl(root, "prompts.jsonl", [QUESTION, HELD_OUT])
    return root


def generate(capsys, *args) -> tuple[int, str, str]:
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_tuned_model_answers_as_trained_beside_the_base_model(chat_job, capsys, tmp_path):
    code, out, err = generate(capsys, chat_job / "out", "--prompts", chat_job / "prompts.jsonl",
                              "--compare", "--max-new-tokens", 12, "--cache", tmp_path)  # fmt: skip
    assert code == 0, err
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2
    for block, asked in zip(blocks, [QUESTION, HELD_OUT], strict=True):
        lines = block.splitlines()
        assert lines[0] == f"### {asked['instruction']}"
        assert lines[1] == f"  reference: {ANSWER}"
        assert lines[2].startswith("  base:      ") and lines[2] != f"  base:      {ANSWER}"
        assert lines[3].startswith("  tuned:     ")
    assert blocks[0].splitlines()[3] == f"  tuned:     {ANSWER}"  # the trained question


def test_merged_weights_and_the_adapter_answer_alike(chat_job, capsys, tmp_path):
    answers = {}
    for weights in ("merged", "adapter"):
        code, out, err = generate(capsys, chat_job / "out", "--prompt", "describe the cat",
                                  "--weights", weights, "--json", "--max-new-tokens", 12,
                                  "--cache", tmp_path)  # fmt: skip
        assert code == 0, err
        answers[weights] = json.loads(out)
    assert answers["merged"] == answers["adapter"]
    assert answers["merged"] == {"prompt": "describe the cat", "reference": None, "tuned": ANSWER}


def test_a_prompt_is_rendered_as_the_trainer_rendered_the_training_records(chat_job, tmp_path):
    """Token for token: the trainer's prompt part of a sample and generate's prompt."""
    plain = make_job(tmp_path / "plain", samples=8)  # template.json "{instruction}:", BOS added
    train(config_for(plain, epoch=1, merge_weights=False), runtime(plain))
    for root, chat_template in ((chat_job, "tokenizer"), (plain, None)):
        job = generation.open_job(f"file://{root}/out", tmp_path / "cache")
        tokenizer = AutoTokenizer.from_pretrained(job.folder("adapter"))
        chosen = FORMATS.choose("instruction", None, "spec.trainer.dataFormat")
        hp = Hyperparameters(instruction_tuned=True, chat_template=chat_template)
        splits = chosen.part.load(Channels(root / "data"), hp, tokenizer, chosen.options)
        sample = splits.train[0]
        first = sample.labels.index(next(x for x in sample.labels if x != IGNORE_INDEX))
        record = json.loads((root / "data" / "train.jsonl").read_text().splitlines()[0])
        asked = prompts.from_record(record, job.prompt, "prompts.jsonl, line 1")
        assert prompts.encode(asked, job.prompt, tokenizer) == sample.input_ids[:first]
        own = tokenizer.get_chat_template() if chat_template else None
        assert job.prompt.chat_template == own


def test_from_s3_the_artifacts_are_downloaded_once_into_the_cache(
    chat_job, capsys, tmp_path, s3_endpoint
):
    bucket = make_bucket()
    open_store("s3://x").upload_dir(chat_job / "out", f"s3://{bucket}/jobs/tiny/")
    args = ("--prompt", "describe the cat", "--json", "--max-new-tokens", 12, "--cache", tmp_path)
    code, out, err = generate(capsys, f"s3://{bucket}/jobs/tiny/", *args)
    assert code == 0, err
    assert json.loads(out)["tuned"] == ANSWER
    # merged/ alone answers without --compare: the adapter is not downloaded
    downloaded = sorted(p.name for p in tmp_path.glob("*/*") if p.is_dir())
    assert downloaded == ["merged"], downloaded


def test_an_unfinished_job_is_exit_1_with_how_far_it_got(chat_job, capsys, tmp_path):
    running = tmp_path / "running"
    shutil.copytree(chat_job / "out", running)
    (running / "MANIFEST.json").unlink()
    code, out, err = generate(capsys, running, "--prompt", "hi")
    assert code == 1 and out == ""
    assert err.startswith(f"kubetune: error: not finished: no MANIFEST.json at file://{running}/")


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "no prompt: give --prompt TEXT or --prompts FILE"),
        (
            ["--prompt", "x", "--temperature", "0.7"],
            "--temperature takes effect only with --do-sample",
        ),
        (
            ["--prompt", "x", "--base", "--base-model", "/nonexistent"],
            "--base-model file:///nonexistent: no Hugging Face model folder there; pass "
            "--base-model DIR (the hub model's folder) to load the base model from elsewhere",
        ),
    ],
)
def test_bad_options_say_what_to_fix(chat_job, capsys, args, expected):
    code, out, err = generate(capsys, chat_job / "out", *args)
    assert (code, out, err) == (2, "", f"kubetune: error: {expected}\n")


def test_a_prompts_file_line_that_is_not_json_names_the_line(chat_job, capsys, tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps(QUESTION) + "\n{not json\n")
    code, _, err = generate(capsys, chat_job / "out", "--prompts", bad)
    assert code == 2
    assert err.startswith(f"kubetune: error: {bad}, line 2: not valid JSON")


def test_a_bare_prompt_fills_the_instruction_field_and_fields_fill_the_rest():
    fmt = PromptFormat(data_format="instruction", prompt="{context}\nQ: {instruction}\nA:")
    asked = prompts.from_text("which port?", fmt, {"context": "billing runs on 8080"})
    assert asked.record == {"context": "billing runs on 8080", "instruction": "which port?"}
    other = PromptFormat(data_format="instruction", prompt="Question: {question}")
    assert prompts.from_text("which port?", other, {}).record == {"question": "which port?"}
