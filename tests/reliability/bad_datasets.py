"""Broken training data, one case per way to break it: the files of a training (and maybe a
validation) folder, and what the trainer's one error line must name. Only what
kubetune_trainer.formats defines as errors, plus what the storage download refuses (an empty
folder). tests/reliability/test_bad_input.py runs them."""

import json
from dataclasses import dataclass, field

RECORD = {"instruction": "describe an animal", "context": "", "response": "the cat sat on a mat"}
LATIN1 = "text\nCaf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1")
DEEP = "[" * 100_000 + "]" * 100_000


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def template(prompt: str, completion: str = " {response}") -> str:
    return json.dumps({"prompt": prompt, "completion": completion})


@dataclass(frozen=True)
class BadData:
    train: dict[str, str | bytes]  # the training folder's files
    names: str  # what the error names, from the case folder: "train/data.csv, line 3"
    says: list[str]  # and the reason, in these words
    instruction: bool = False
    hyperparameters: dict = field(default_factory=dict)
    validation: dict[str, str | bytes] | None = None


DOMAIN = {
    "csv-empty-file": BadData({"data.csv": ""}, "train/data.csv", ["header row is empty"]),
    "csv-empty-header": BadData(
        {"data.csv": ",,\nfox,dog,cat\n"}, "train/data.csv", ["header row is empty"]
    ),
    "csv-header-only": BadData(
        {"data.csv": "text\n"}, "train/data.csv", ["no text", "0 rows", "'text'"]
    ),
    "csv-ragged-rows": BadData(
        {"data.csv": "id,text\n1\n2\n3\n"}, "train/data.csv", ["no text", "3 rows", "'text'"]
    ),
    "csv-no-text-column-first-empty": BadData(
        {"data.csv": "id,body\n,the cat sat\n,on a mat\n"},
        "train/data.csv",
        ["no text", "2 rows", "column 'id'"],
    ),
    "csv-binary-garbage": BadData(
        {"data.csv": bytes(range(256)) * 8}, "train/data.csv", ["not UTF-8", "offset 128"]
    ),
    "csv-utf16": BadData(
        {"data.csv": "text\nhello\n".encode("utf-16")}, "train/data.csv", ["not UTF-8", "offset 0"]
    ),
    "csv-latin1": BadData({"data.csv": LATIN1}, "train/data.csv", ["not UTF-8", "offset 8"]),
    "txt-gzipped": BadData(
        {"data.txt": b"\x1f\x8b\x08\x00" + bytes(range(128, 256))},
        "train/data.txt",
        ["not UTF-8", "offset 1"],
    ),
    "txt-shorter-than-a-block": BadData(
        {"data.txt": "the cat"}, "train/data.txt", ["fewer than one block of 1024 tokens"]
    ),
    "json-syntax-error": BadData(
        {"data.json": '[{"text": "a"},\n {"text": "b"}\n {"text": "c"}]'},
        "train/data.json, line 3, column 2",
        ["invalid JSON", "Expecting ',' delimiter"],
    ),
    "json-one-line-syntax-error": BadData(
        {"data.json": '[{"text": "a"}, {"text": "b"} {"text": "c"}]'},
        "train/data.json, line 1, column 31",
        ["invalid JSON"],
    ),
    "json-not-objects": BadData(
        {"data.json": "[1, 2, 3]"}, "train/data.json, record 1", ["no usable column", "got int"]
    ),
    "json-pretty-printed-object": BadData(
        {"data.json": '{\n  "text": "the cat sat"\n}\n'},
        "train/data.json",
        ["one JSON value over several lines", "a list of records"],
    ),
    "json-nested-too-deeply": BadData(
        {"data.json": DEEP}, "train/data.json", ["invalid JSON (nested too deeply)"]
    ),
    "jsonl-syntax-error-line-3": BadData(
        {"data.jsonl": '{"text": "a"}\n{"text": "b"}\n{"text": "c",}\n'},
        "train/data.jsonl, line 3",
        ["invalid JSON"],
    ),
    "jsonl-objects-and-lists": BadData(
        {"data.jsonl": '{"text": "a"}\n["b"]\n'},
        "train/data.jsonl, line 2",
        ["no usable column", "got list"],
    ),
    "jsonl-text-not-a-string": BadData(
        {"data.jsonl": '{"text": "a"}\n{"text": 42}\n'},
        "train/data.jsonl, line 2",
        ["field 'text' must be a string, got int"],
    ),
    "jsonl-blank-lines-only": BadData(
        {"data.jsonl": "\n\n  \n"}, "train/data.jsonl", ["no records"]
    ),
    "jsonl-first-record-empty": BadData(
        {"data.jsonl": '{}\n{"text": "a"}\n'},
        "train/data.jsonl",
        ["the first record has no fields"],
    ),
    "jsonl-texts-all-empty": BadData(
        {"data.jsonl": '{"text": ""}\n{"text": null}\n'},
        "train/data.jsonl",
        ["no text", "2 records", "'text'"],
    ),
    "jsonl-lone-surrogate": BadData(
        {"data.jsonl": '{"text": "fine"}\n{"text": "half \\ud800 a pair"}\n'},
        "train/data.jsonl, line 2",
        ["invalid JSON", "surrogate"],
    ),
    "jsonl-huge-integer": BadData(
        {"data.jsonl": '{"text": "a", "n": ' + "9" * 5000 + "}\n"},
        "train/data.jsonl, line 1",
        ["invalid JSON", "digits"],
    ),
    "unsupported-extension": BadData(
        {"data.parquet": b"PAR1"}, "train/data.parquet", ["unsupported file type '.parquet'"]
    ),
    "no-extension": BadData({"data": "text"}, "train/data", ["unsupported file type '(none)'"]),
    "mixed-formats": BadData(
        {"a.csv": "text\nx\n", "b.jsonl": jsonl({"text": "y"})},
        "train",
        ["several data files (a.csv, b.jsonl)"],
    ),
    "empty-folder": BadData({}, "train", ["not found", "no files under it"]),
    "hidden-files-only": BadData(
        {".DS_Store": "x", "._data.csv": "text\nx\n"}, "train", ["no data file"]
    ),  # fmt: skip
}
INSTRUCTION = {
    "template-unknown-placeholder": BadData(
        {"template.json": template("{question}"), "train.jsonl": jsonl(RECORD, RECORD)},
        "train/train.jsonl, line 1",
        ["field 'question'", "template.json", "missing"],
    ),
    "template-attribute-access": BadData(
        {"template.json": template("{instruction.__class__}"), "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["unsafe placeholder {instruction.__class__}"],
    ),
    "template-globals-chain": BadData(
        {
            "template.json": template("{instruction.__init__.__globals__}"),
            "train.jsonl": jsonl(RECORD),
        },
        "train/template.json",
        ["unsafe placeholder"],
    ),
    "template-index": BadData(
        {"template.json": template(" {response[0]}"), "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["unsafe placeholder {response[0]}"],
    ),
    "template-positional": BadData(
        {"template.json": template("{0}"), "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["unsafe placeholder {0}"],
    ),
    "template-conversion": BadData(
        {"template.json": template("{instruction!r}"), "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["unsafe placeholder {instruction!r}"],
    ),
    "template-nested-format-spec": BadData(
        {"template.json": template("{instruction:{context}}"), "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["unsafe placeholder"],
    ),
    "template-not-json": BadData(
        {"template.json": "prompt: {instruction}\n", "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["not valid JSON (line 1"],
    ),
    "template-a-list": BadData(
        {"template.json": '["{instruction}", "{response}"]', "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["string fields 'prompt' and 'completion'"],
    ),
    "template-prompt-a-number": BadData(
        {
            "template.json": '{"prompt": 1, "completion": "{response}"}',
            "train.jsonl": jsonl(RECORD),
        },
        "train/template.json",
        ["string fields 'prompt' and 'completion'"],
    ),
    "template-duplicate-key": BadData(
        {
            "template.json": '{"prompt": "{instruction}", "prompt": "{context}", '
            '"completion": " {response}"}',
            "train.jsonl": jsonl(RECORD),
        },
        "train/template.json",
        ["key 'prompt' appears twice"],
    ),
    "template-oversized": BadData(
        {
            "template.json": template("{instruction}" + " " * (1024 * 1024)),
            "train.jsonl": jsonl(RECORD),
        },
        "train/template.json",
        ["over the 1.0 MiB limit"],
    ),
    "jsonl-record-oversized": BadData(
        {"train.jsonl": jsonl(RECORD) + '{"instruction": "' + "x" * (65 * 1024 * 1024) + '"}\n'},
        "train/train.jsonl, line 2",
        ["a record of 65 MiB is over the 64 MiB limit for one JSON line"],
    ),
    "template-unbalanced-brace": BadData(
        {"template.json": template("{instruction"), "train.jsonl": jsonl(RECORD)},
        "train/template.json: prompt",
        ["invalid format string"],
    ),
    "template-not-utf8": BadData(
        {
            "template.json": '{"prompt": "Caf\u00e9 {instruction}", "completion": ""}'.encode(
                "latin-1"
            ),
            "train.jsonl": jsonl(RECORD),
        },
        "train/template.json",
        ["not UTF-8"],
    ),
    "template-nested-too-deeply": BadData(
        {"template.json": DEEP, "train.jsonl": jsonl(RECORD)},
        "train/template.json",
        ["not valid JSON (nested too deeply)"],
    ),
    "jsonl-syntax-error-line-5": BadData(
        {"train.jsonl": jsonl(RECORD, RECORD, RECORD, RECORD) + '{"instruction": "x",}\n'},
        "train/train.jsonl, line 5",
        ["invalid JSON"],
    ),
    "jsonl-python-dict": BadData(
        {"train.jsonl": "{'instruction': 'x', 'context': '', 'response': 'y'}\n"},
        "train/train.jsonl, line 1",
        ["invalid JSON", "double quotes"],
    ),
    "record-not-an-object": BadData(
        {"train.jsonl": jsonl(RECORD, "just text")},
        "train/train.jsonl, line 2",
        ["expected a JSON object, got str"],
    ),
    "record-missing-a-field": BadData(
        {"train.jsonl": jsonl(RECORD, {"instruction": "x", "response": "y"})},
        "train/train.jsonl, line 2",
        ["field 'context'", "the default template", "missing"],
    ),
    "record-lone-surrogate": BadData(
        {
            "train.jsonl": jsonl(RECORD) + '{"instruction": "\\udfff", "context": "", '
            '"response": "x"}\n'
        },
        "train/train.jsonl, line 2",
        ["surrogate"],
    ),
    "csv-beside-jsonl": BadData(
        {"train.jsonl": jsonl(RECORD, RECORD), "notes.csv": "text\nx\n"},
        "train",
        ["unsupported file(s) notes.csv"],
    ),
    "template-without-data": BadData(
        {"template.json": template("{instruction}")}, "train", ["no data file", ".jsonl"]
    ),
    "jsonl-utf16": BadData(
        {"train.jsonl": jsonl(RECORD).encode("utf-16")}, "train/train.jsonl", ["not UTF-8"]
    ),
    "every-prompt-too-long": BadData(
        {"train.jsonl": jsonl(*[RECORD] * 5)},
        "train",
        ["no sample left", "all 4 records have a prompt of 8 tokens or more"],
        hyperparameters={"max_input_length": 8},
    ),
    "one-record-cannot-be-split": BadData(
        {"train.jsonl": jsonl(RECORD)},
        "train",
        ["1 sample(s) cannot be split", "validation_split_ratio"],
    ),
    "bad-validation-channel": BadData(
        {"train.jsonl": jsonl(RECORD, RECORD)},
        "validation/val.jsonl, line 2",
        ["invalid JSON"],
        validation={"val.jsonl": jsonl(RECORD) + "{oops\n"},
    ),
}
INSTRUCTION = {name: BadData(**{**case.__dict__, "instruction": True})
               for name, case in INSTRUCTION.items()}  # fmt: skip
DATASETS = {**DOMAIN, **INSTRUCTION}
