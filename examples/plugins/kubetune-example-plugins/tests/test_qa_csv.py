"""The qa-csv format: samples with the loss on the answer, its options schema, and one line per
data problem naming the file, the line and the rule."""

import importlib.metadata

import pytest
from kubetune_example_plugins.qa_csv import QA_CSV, QaCsvOptions

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.formats import IGNORE_INDEX, Channels, DataError
from kubetune_trainer.registry import PartError, Registry

HEADER = "question,context,answer\n"
ROWS = "".join(
    f"What language is s{i} written in?,service: s{i}; language: Go,s{i} is written in Go.\n"
    for i in range(10)
)


def load(folder, tokenizer, options=None, **hyperparameters):
    hp = Hyperparameters(max_input_length=64, **hyperparameters)
    return QA_CSV.load(Channels(train=folder), hp, tokenizer, QaCsvOptions(**(options or {})))


def channel(tmp_path, text: str, name: str = "qa.csv"):
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / name).write_text(text)
    return folder


def test_the_loss_is_on_the_answer_and_the_eos_only(tmp_path, tokenizer):
    folder = channel(tmp_path, HEADER + ROWS)
    splits = load(folder, tokenizer, {"prompt": "{context}\nQuestion: {question}\nAnswer:"})
    assert (len(splits.train), len(splits.validation)) == (8, 2)  # validation_split_ratio 0.2
    for sample in splits.train + splits.validation:
        answer = [
            t
            for t, label in zip(sample.input_ids, sample.labels, strict=True)
            if label != IGNORE_INDEX
        ]
        prompt = sample.input_ids[: len(sample.input_ids) - len(answer)]
        assert set(sample.labels[: len(prompt)]) == {IGNORE_INDEX}
        assert answer[-1] == tokenizer.eos_token_id
        said = tokenizer.decode(answer[:-1])
        assert said.startswith(" s") and said.endswith(" is written in Go.")
        assert tokenizer.decode(prompt, skip_special_tokens=True).startswith("service: s")
        assert tokenizer.decode(prompt).endswith("written in?\nAnswer:")


def test_columns_are_found_by_the_names_the_options_give(tmp_path, tokenizer):
    folder = channel(
        tmp_path, "Q,A\nWho owns search?,The data team.\nWho owns billing?,Payments.\n"
    )
    options = {"questionColumn": "Q", "answerColumn": "A", "prompt": "{Q} ->"}
    splits = load(folder, tokenizer, options, validation_split_ratio=0.5)
    texts = [tokenizer.decode(s.input_ids, skip_special_tokens=True) for s in splits.train]
    assert texts[0] in ("Who owns search? -> The data team.", "Who owns billing? -> Payments.")


def test_blank_lines_are_skipped_and_caps_count_rows(tmp_path, tokenizer):
    folder = channel(tmp_path, HEADER + ROWS.replace("\n", "\n\n", 3))
    splits = load(folder, tokenizer, max_train_samples=3, max_val_samples=1)
    assert (len(splits.train), len(splits.validation)) == (3, 1)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("q,a\nx,y\n", "line 1: no column 'question' (columns: 'q', 'a'); set the format's "
         "questionColumn option to the right header"),
        ("question,answer\nWhy?,\n", "line 2: empty answer (column 'answer')"),
        ("question,answer\n\"Two\nlines?\",yes\n ,no\n", "line 4: empty question (column "
         "'question')"),
        ("question,answer\nWhy?,because,extra\n", "line 2: 3 fields, the header row has 2"),
        ("question,answer,answer\nWhy?,a,b\n", "line 1: column 'answer' appears twice in the "
         "header row"),
        ("question,answer\n", "no rows below the header row"),
        ("\n", "line 1: no header row; the first line names the columns"),
    ],
    ids=["missing column", "empty answer", "empty question after a two-line cell",
         "ragged row", "column twice", "no rows", "no header"],
)  # fmt: skip
def test_a_data_problem_names_the_file_line_and_rule(tmp_path, tokenizer, text, problem):
    folder = channel(tmp_path, text)
    with pytest.raises(DataError) as raised:
        load(folder, tokenizer)
    assert str(raised.value) == f"{folder / 'qa.csv'}{', ' if 'line' in problem else ': '}{problem}"


def test_a_prompt_field_must_be_a_column_of_the_file(tmp_path, tokenizer):
    folder = channel(tmp_path, "question,answer\nWhy?,Because.\n")
    with pytest.raises(DataError, match=r"qa.csv, line 1: the prompt's \{context\} is not a col"):
        load(folder, tokenizer, {"prompt": "{context} {question}"})


def test_other_files_and_empty_folders_are_refused(tmp_path, tokenizer):
    folder = channel(tmp_path, "{}", name="qa.jsonl")
    with pytest.raises(DataError, match="unsupported file.s. qa.jsonl; qa-csv reads .csv"):
        load(folder, tokenizer)
    (folder / "qa.jsonl").unlink()
    with pytest.raises(DataError, match=r"no data file \(qa-csv reads .csv files\)"):
        load(folder, tokenizer)


@pytest.fixture
def formats():
    """A registry of its own holding only this format: what the trainer's does with it."""
    registry = Registry("data format", "test.none")
    registry.add(QA_CSV)
    return registry


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"questionColumn": ""}, "questionColumn: String should have at least 1 character "
         "(got '')"),
        ({"answerColumn": "question"}, "answerColumn: the answer column must not be the "
         "question column (got 'question')"),
        ({"prompt": "Answer:"}, "prompt: the prompt must contain {question} (got 'Answer:')"),
        ({"prompt": "{question} {answer}"}, "prompt: the prompt names the answer column "
         "{answer}: the model would see the answer"),
        ({"prompt": "{question"}, "prompt: not a format string: expected '}' before end of "
         "string"),
        ({"prompt": "{0} {question}"}, "prompt: {0}: a field names a column"),
        ({"prompt": "{question!r}"}, "prompt: {question}: a field takes no format spec"),
        ({"promt": "{question}"}, "promt: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_bad_options_fail_with_their_field_path(formats, options, problem):
    with pytest.raises(PartError) as raised:
        formats.choose("qa-csv", options, "spec.trainer.dataFormat")
    assert str(raised.value).startswith(f"spec.trainer.dataFormat.options.{problem}")


def test_defaults_need_question_and_answer_columns(formats):
    chosen = formats.choose("qa-csv", None, "spec.trainer.dataFormat")
    assert chosen.options == QaCsvOptions(
        question_column="question", answer_column="answer", prompt="Question: {question}\nAnswer:"
    )


def test_the_installed_package_registers_the_format_by_its_entry_point():
    from kubetune_trainer.formats import FORMATS

    points = importlib.metadata.entry_points(group="kubetune.data_formats", name="qa-csv")
    assert points, "install the package first: pip install --no-deps -e ."
    assert FORMATS.get("qa-csv", "test") is QA_CSV
