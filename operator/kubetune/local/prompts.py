"""Prompts for `kubetune generate`, rendered as the job's data format rendered its training
records (the job's prompt.json): the instruction template, the chat template, or plain text.

A prompt comes from `--prompt TEXT` or from a file of records shaped like the training data
(.jsonl: instruction fields, or `{"messages": [...]}` for chat, or `{"text": ...}`), where the
part the model was trained to write (the completion, the last assistant turn) is the reference.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from kubetune.api import templates
from kubetune.api.safeload import Limits, LoadError, read_bounded
from kubetune.api.templates import TemplateError
from kubetune.api.v1alpha1 import PromptFormat
from kubetune.local.files import LocalError

# Which record field a bare `--prompt TEXT` fills when the template uses it; otherwise the
# template's first field.
PROMPT_FIELD = "instruction"
# End-of-turn markers of common chat templates: generation stops on them where the template
# writes them and the tokenizer knows them as one token.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>")
PROMPTS_FILE = Limits(max_bytes=16 << 20)  # prompts, not a dataset


@dataclass(frozen=True)
class Prompt:
    shown: str  # what the user asked, for the output
    record: dict  # template fields, or {"messages": [...]}, or {"text": ...}
    reference: str | None = None


def from_text(text: str, fmt: PromptFormat, fields: dict[str, str]) -> Prompt:
    """A `--prompt TEXT`, with `--field NAME=VALUE`s for the template's other fields."""
    if fmt.data_format == "chat":
        return Prompt(text, {"messages": [{"role": "user", "content": text}]})
    if fmt.prompt is None:
        return Prompt(text, {"text": text})
    used = templates.fields(templates.parse_format(fmt.prompt, "prompt.json: prompt"))
    target = PROMPT_FIELD if PROMPT_FIELD in used or not used else used[0]
    record = {name: "" for name in used} | fields | {target: text}
    return Prompt(text, record)


def from_file(path: Path, fmt: PromptFormat) -> list[Prompt]:
    """Every record of a .jsonl file (a .txt file: one prompt per line)."""
    try:
        lines = read_bounded(path, PROMPTS_FILE).splitlines()
    except (OSError, LoadError) as err:
        raise LocalError(f"--prompts {path}: {err}") from None
    except UnicodeDecodeError:
        raise LocalError(f"--prompts {path}: not UTF-8 text") from None
    if path.suffix.lower() == ".txt":
        return [from_text(line, fmt, {}) for line in lines if line.strip()]
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LocalError(f"{where}: not valid JSON ({err.msg})") from None
        prompts.append(from_record(record, fmt, where))
    if not prompts:
        raise LocalError(f"--prompts {path}: no prompt in the file")
    return prompts


def from_record(record: object, fmt: PromptFormat, where: str) -> Prompt:
    if isinstance(record, str):
        return from_text(record, fmt, {})
    if not isinstance(record, dict):
        raise LocalError(f"{where}: expected a JSON object or string, got {type(record).__name__}")
    if fmt.data_format == "chat":
        return chat_prompt(record, where)
    if fmt.prompt is None:
        if not isinstance(record.get("text"), str):
            raise LocalError(f"{where}: expected a 'text' string (the job trained on plain text)")
        return Prompt(record["text"], {"text": record["text"]})
    try:
        shown = templates.fill(parse(fmt.prompt, "prompt"), record, where, "the job's template")
    except TemplateError as err:
        raise LocalError(str(err)) from None
    reference = None
    if fmt.completion is not None:
        try:
            reference = templates.fill(parse(fmt.completion, "completion"), record, where, "")
        except TemplateError:
            reference = None  # a prompt file need not carry answers
    return Prompt(shown.strip(), record, reference.strip() if reference else None)


def chat_prompt(record: dict, where: str) -> Prompt:
    """The conversation up to its last user turn; a last assistant turn is the reference."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
    ):
        raise LocalError(f"{where}: expected 'messages': a list of {{role, content}} objects")
    reference = None
    if messages and messages[-1].get("role") == "assistant":
        reference, messages = messages[-1]["content"], messages[:-1]
    if not messages or messages[-1].get("role") != "user":
        raise LocalError(f"{where}: the conversation must end with a user message")
    return Prompt(messages[-1]["content"], {"messages": messages}, reference)


def encode(prompt: Prompt, fmt: PromptFormat, tokenizer) -> list[int]:
    """Token ids the model continues from: the same text, and the same special tokens, its
    training prompts had."""
    if fmt.data_format == "chat":
        messages = prompt.record["messages"]
    elif fmt.prompt is not None:
        text = templates.fill(parse(fmt.prompt, "prompt"), prompt.record, "--prompt", "")
        if fmt.chat_template is None:
            return tokenizer(text, add_special_tokens=True)["input_ids"]
        messages = [{"role": "user", "content": text.strip()}]
    else:
        return tokenizer(prompt.record["text"], add_special_tokens=True)["input_ids"]
    text = tokenizer.apply_chat_template(
        messages,
        chat_template=fmt.chat_template or tokenizer.get_chat_template(),
        tokenize=False,
        add_generation_prompt=True,
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_ids(fmt: PromptFormat, tokenizer) -> list[int]:
    """EOS, and the chat template's end-of-turn token where it is one token."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    template = fmt.chat_template or ""
    vocab = tokenizer.get_vocab()
    ids += [vocab[m] for m in END_OF_TURN if m in template and m in vocab]
    return list(dict.fromkeys(ids))


def parse(text: str, what: str) -> templates.Parts:
    try:
        return templates.parse_format(text, f"prompt.json: {what}")
    except TemplateError as err:
        raise LocalError(str(err)) from None
