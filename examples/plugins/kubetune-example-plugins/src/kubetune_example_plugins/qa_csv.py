"""`qa-csv`: question/answer pairs from the rows of .csv files, as instruction samples: the
prompt (a format string over the row) is context, the loss is on the answer and the EOS after
it. Reading, splitting, caps and tokenization are the bundled trainer's own helpers; only the
CSV rules are this format's."""

import csv
import io
import string
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from kubetune.api.v1alpha1 import Hyperparameters
from kubetune_trainer.formats import Channels, DataError, DataFormat, Splits
from kubetune_trainer.formats.encoder import Encoder, effective_max_length, require_eos
from kubetune_trainer.formats.files import read_text, visible_files
from kubetune_trainer.formats.instruction import instruction_samples
from kubetune_trainer.formats.split import split_and_cap, splits
from kubetune_trainer.registry import Options

QUESTION = "question"  # the prompt's name for the question column, whatever its header


class QaCsvOptions(Options):
    question_column: str = Field(
        "question", min_length=1, description="Header of the column that holds the question."
    )
    answer_column: str = Field(
        "answer",
        min_length=1,
        description="Header of the column that holds the answer, the tokens the loss is on.",
    )
    prompt: str = Field(
        "Question: {question}\nAnswer:",
        description="Format string of the prompt: {question} is the question, any other "
        "{name} the row's value in column `name`. The answer follows it after one space.",
    )

    @field_validator("answer_column")
    @classmethod
    def _not_the_question(cls, answer: str, info: ValidationInfo) -> str:
        if answer == info.data.get("question_column"):
            raise PydanticCustomError(
                "same_column", "the answer column must not be the question column"
            )
        return answer

    @field_validator("prompt")
    @classmethod
    def _prompt_fields(cls, prompt: str, info: ValidationInfo) -> str:
        fields = prompt_fields(prompt)
        question = {QUESTION, info.data.get("question_column")}
        if not fields & question:
            raise PydanticCustomError("no_question", "the prompt must contain {question}")
        answer = info.data.get("answer_column")
        if answer in fields:
            raise PydanticCustomError(
                "answer_in_prompt",
                "the prompt names the answer column {field}: the model would see the answer",
                {"field": f"{{{answer}}}"},
            )
        return prompt


def prompt_fields(prompt: str) -> set[str]:
    """The {names} of a prompt. A row is looked up by column name only: positional, attribute
    and index fields are refused, as are format specs and conversions."""
    try:
        parsed = list(string.Formatter().parse(prompt))
    except ValueError as err:
        raise PydanticCustomError(
            "bad_format", "not a format string: {err}", {"err": str(err)}
        ) from None
    fields = [(name, spec, conversion) for _, name, spec, conversion in parsed if name is not None]
    for name, spec, conversion in fields:
        if not name or name.isdigit() or "." in name or "[" in name:
            raise PydanticCustomError(
                "bad_field",
                "{field}: a field names a column, e.g. {question} or {context}",
                {"field": f"{{{name}}}"},
            )
        if spec or conversion:  # text goes in as it is; a spec could fail on any row
            raise PydanticCustomError(
                "field_spec",
                "{field}: a field takes no format spec or conversion",
                {"field": f"{{{name}}}"},
            )
    names = {name for name, _, _ in fields}
    return names


def load(channels: Channels, hp: Hyperparameters, tokenizer, options: QaCsvOptions) -> Splits:
    """Caps count rows (the user's unit); the split happens before tokenization too."""
    max_length = effective_max_length(hp, tokenizer)
    require_eos(tokenizer)
    with Encoder(tokenizer, hp.preprocessing_num_workers) as encoder:
        train = qa_pairs(channels.train, options)
        val = qa_pairs(channels.validation, options) if channels.validation else None
        train, val = split_and_cap(train, val, hp, channels.train)
        train = instruction_samples(train, encoder, max_length, f"{channels.train}")
        source = f"{channels.validation or channels.train}"
        val = instruction_samples(val, encoder, max_length, source)
    return splits(train, val, max_length)


def qa_pairs(folder: Path, options: QaCsvOptions) -> list[tuple[str, str]]:
    """(prompt, completion) of every row of the folder's .csv files, in order."""
    files = visible_files(folder)
    others = [p.name for p in files if p.suffix.lower() != ".csv"]
    if others:
        raise DataError(f"{folder}: unsupported file(s) {', '.join(others)}; qa-csv reads .csv")
    if not files:
        raise DataError(f"{folder}: no data file (qa-csv reads .csv files)")
    return [pair for path in files for pair in csv_pairs(path, read_text(path), options)]


def csv_pairs(path: Path, text: str, options: QaCsvOptions) -> list[tuple[str, str]]:
    csv.field_size_limit(2**31 - 1)  # a long answer may sit in one cell
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        column = header_columns(path, header, options)
        pairs, line = [], reader.line_num + 1
        for row in reader:
            where, line = f"{path}, line {line}", reader.line_num + 1  # a cell may span lines
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, the header row has {len(header)}")
            values = dict(zip(header, row, strict=True))
            question = row[column[options.question_column]].strip()
            answer = row[column[options.answer_column]].strip()
            for what, value, name in [
                ("question", question, options.question_column),
                ("answer", answer, options.answer_column),
            ]:
                if not value:
                    raise DataError(f"{where}: empty {what} (column {name!r})")
            pairs.append((options.prompt.format_map({**values, QUESTION: question}), f" {answer}"))
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: invalid CSV ({err})") from None
    if not pairs:
        raise DataError(f"{path}: no rows below the header row")
    return pairs


def header_columns(path: Path, header: list[str], options: QaCsvOptions) -> dict[str, int]:
    """Column name -> index; the columns the options name must be there, once each."""
    where = f"{path}, line 1"
    if not any(header):
        raise DataError(f"{where}: no header row; the first line names the columns")
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:
        raise DataError(f"{where}: column {twice[0]!r} appears twice in the header row")
    known = ", ".join(repr(name) for name in header)
    for option, name in [
        ("questionColumn", options.question_column),
        ("answerColumn", options.answer_column),
    ]:
        if name not in header:
            raise DataError(
                f"{where}: no column {name!r} (columns: {known}); set the format's {option} "
                "option to the right header"
            )
    for name in sorted(prompt_fields(options.prompt) - {QUESTION}):
        if name not in header:
            raise DataError(f"{where}: the prompt's {{{name}}} is not a column (columns: {known})")
    return {name: i for i, name in enumerate(header)}


QA_CSV = DataFormat(
    name="qa-csv",
    options=QaCsvOptions,
    load=load,
    description=".csv rows of a question and an answer; loss on the answer",
)
