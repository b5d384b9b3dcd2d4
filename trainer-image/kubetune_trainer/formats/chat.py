"""`chat`: conversations, one `{"messages": [{"role": ..., "content": ...}, ...]}` record per
line of .jsonl files (or in a .json list), rendered through a chat template; the loss is on
the assistant turns only (their content and end-of-turn marker), never on system or user
turns or the template's headers.

Loss spans come from rendering prefixes: an assistant turn k starts where the conversation
up to k with the generation prompt ends, and stops where the conversation through k ends.
That works with any template that renders a conversation as the concatenation of its
prefixes, which the tokenizer's own templates almost always do.
"""

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from kubetune.api.v1alpha1 import Hyperparameters, PromptFormat
from kubetune_trainer.formats import FORMATS, Channels, DataFormat
from kubetune_trainer.formats.chat_templates import CHATML, NAMED
from kubetune_trainer.formats.encoder import Encoder, effective_max_length
from kubetune_trainer.formats.files import json_records, read_text, visible_files
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError, Sample, Splits
from kubetune_trainer.formats.split import split_and_cap, splits
from kubetune_trainer.registry import Options

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
EXTENSIONS = (".jsonl", ".json")
RECORD_SHAPE = '{"messages": [{"role": "user", "content": "..."}, ...]}'
CHUNK = 1000  # records rendered and tokenized together: bounds the memory of prefix texts

Conversation = list[dict[str, str]]


class ChatOptions(Options):
    template: Literal["tokenizer", "chatml", "llama3"] | None = Field(
        None,
        description="Chat template: `tokenizer` (the model's own), `chatml` or `llama3`. "
        "Default: the tokenizer's when it has one, else ChatML.",
    )


def load(channels: Channels, hp: Hyperparameters, tokenizer, options: ChatOptions) -> Splits:
    """Caps count records (conversations); the split happens before tokenization."""
    max_length = effective_max_length(hp, tokenizer)
    name, template = choose_template(tokenizer, options.template)
    with Encoder(tokenizer, hp.preprocessing_num_workers) as encoder:
        train = conversations(channels.train)
        val = conversations(channels.validation) if channels.validation else None
        train, val = split_and_cap(train, val, hp, channels.train)
        source = f"{channels.validation or channels.train}"
        train = chat_samples(train, encoder, template, max_length, f"{channels.train}")
        val = chat_samples(val, encoder, template, max_length, source)
        test = None
        if channels.test:
            records = conversations(channels.test)
            test = chat_samples(records, encoder, template, max_length, f"{channels.test}")
    log.info("chat: %s template, loss on assistant turns", name)
    prompt = PromptFormat(data_format="chat", chat_template=template)
    return splits(train, val, max_length, test, prompt)


def choose_template(
    tokenizer, choice: str | None, setting: str = "the chat format's options.template"
) -> tuple[str, str]:
    """(name, Jinja source) of the template to render with; `setting` names the choice in
    errors."""
    own = getattr(tokenizer, "chat_template", None)
    if choice == "tokenizer" or (choice is None and own):
        if not own:
            raise DataError(
                f"{setting} is 'tokenizer', but the model's tokenizer has no chat template; "
                f"choose one of {', '.join(NAMED)}"
            )
        return "the tokenizer's", tokenizer.get_chat_template()
    named = NAMED[choice] if choice else CHATML
    vocab = tokenizer.get_vocab()
    missing = [m for m in named.markers if m not in vocab]
    if missing:  # still trains, but the model must learn each marker as several tokens
        log.warning(
            "chat template %s: %s not token(s) of this tokenizer; they are learnt as plain "
            "text, and generation must stop on the text, not on a token",
            named.name, ", ".join(missing),
        )  # fmt: skip
    return named.name, named.jinja


# --- records -------------------------------------------------------------------------------


def conversations(folder: Path) -> list[tuple[str, Conversation]]:
    """("file, line N", messages) of every record in the folder's files, in order."""
    files = visible_files(folder)
    others = [p.name for p in files if p.suffix.lower() not in EXTENSIONS]
    if others:
        raise DataError(
            f"{folder}: unsupported file(s) {', '.join(others)}; the chat format reads .jsonl "
            "files (or .json files holding a list of records)"
        )
    if not files:
        raise DataError(f"{folder}: no data file (the chat format expects .jsonl files)")
    found = []
    for path in files:
        for where, record in json_records(path, read_text(path)):
            found.append((f"{path}, {where}", messages_of(record, f"{path}, {where}")))
    return found


def messages_of(record: object, where: str) -> Conversation:
    """The record's messages, checked: known roles, string contents, an optional system
    message first, then user and assistant alternating, at least one assistant turn."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" not in record:
        raise DataError(f"{where}: no 'messages' list; a chat record is {RECORD_SHAPE}")
    messages = record["messages"]
    if not isinstance(messages, list):
        kind = type(messages).__name__
        raise DataError(f"{where}: 'messages' must be a list of messages, got {kind}")
    if not messages:
        raise DataError(f"{where}: 'messages' is empty; a chat record is {RECORD_SHAPE}")
    checked = []
    for number, message in enumerate(messages, start=1):
        at = f"{where}: message {number}"
        if not isinstance(message, dict):
            kind = type(message).__name__
            raise DataError(f"{at} must be a JSON object with 'role' and 'content', got {kind}")
        role = message.get("role")
        if role not in ROLES:
            what = f"unknown role {role!r}" if "role" in message else "no 'role'"
            raise DataError(f"{at}: {what} (allowed: {', '.join(ROLES)})")
        if "content" not in message:
            raise DataError(f"{at} ({role}): no 'content'")
        if not isinstance(message["content"], str):
            kind = type(message["content"]).__name__
            raise DataError(f"{at} ({role}): 'content' must be a string, got {kind}")
        previous = checked[-1]["role"] if checked else None
        expected = "user" if previous in (None, "system", "assistant") else "assistant"
        if role == "system" and number > 1:
            raise DataError(f"{at} (system): a system message may only come first")
        if role != "system" and role != expected:
            raise DataError(
                f"{at} ({role}): expected role {expected!r}; after an optional system "
                "message, user and assistant messages alternate, starting with user"
            )
        checked.append({"role": role, "content": message["content"]})
    if not any(m["role"] == "assistant" for m in checked):
        raise DataError(f"{where}: no assistant message; the loss is on assistant turns only")
    return checked


# --- rendering and loss spans --------------------------------------------------------------


def chat_samples(
    records: list[tuple[str, Conversation]],
    encoder: Encoder,
    template: str,
    max_length: int,
    source: str,
    unit: str = "conversations",
) -> list[Sample]:
    samples, dropped, truncated = [], 0, 0
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        texts, owners = [], []  # per record: the full text, then each span boundary's prefix
        for index, (where, messages) in enumerate(chunk):
            rendered = render_boundaries(encoder.tokenizer, template, messages, where)
            texts += rendered
            owners += [index] * len(rendered)
        ids = encoder.encode(texts, add_special_tokens=False)  # the template writes BOS itself
        by_record: list[list[list[int]]] = [[] for _ in chunk]
        for owner, encoded in zip(owners, ids, strict=True):
            by_record[owner].append(encoded)
        for full, *boundaries in by_record:
            labels = [IGNORE_INDEX] * len(full)
            for begin, end in zip(boundaries[::2], boundaries[1::2], strict=True):
                s, e = _common_prefix(begin, full), _common_prefix(end, full)
                labels[s:e] = full[s:e]
            input_ids, labels = full[:max_length], labels[:max_length]
            if all(label == IGNORE_INDEX for label in labels):
                dropped += 1
                continue
            truncated += len(full) > max_length
            samples.append(Sample(input_ids=input_ids, labels=labels))
    if dropped or truncated:
        log.warning(
            "%s: %d of %d %s dropped (no assistant token within %d tokens), %d truncated to %d "
            "tokens (max_input_length)",
            source, dropped, len(records), unit, max_length, truncated, max_length,
        )  # fmt: skip
    if not samples:
        raise DataError(
            f"{source}: no sample left: none of the {len(records)} {unit} has an "
            f"assistant token within {max_length} tokens (max_input_length)"
        )
    return samples


def render_boundaries(tokenizer, template: str, messages: Conversation, where: str) -> list[str]:
    """[full text, then for each assistant turn: the text before its content (the turn's
    header included), and the text through its end-of-turn marker]."""

    def render(upto: int, prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            messages[:upto], chat_template=template, tokenize=False, add_generation_prompt=prompt
        )

    full = render(len(messages), False)
    texts = [full]
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # Whitespace after the end-of-turn marker (ChatML's newline) separates turns; the
        # model need not learn it.
        begin, end = render(k, True), render(k + 1, False).rstrip()
        for text in (begin, end):
            if not full.startswith(text):
                raise DataError(
                    f"{where}: the chat template renders message {k + 1} differently once "
                    "later messages follow, so the assistant turns cannot be found; choose "
                    f"another template (the chat format's template option: {', '.join(NAMED)})"
                )
        texts += [begin, end]
    return texts


def _common_prefix(prefix: list[int], full: list[int]) -> int:
    """How many tokens of `full` the tokenized prefix covers. Usually the prefix's length; less
    where the tokenizer merged the boundary's characters with the next ones into one token."""
    n = 0
    for a, b in zip(prefix, full, strict=False):
        if a != b:
            break
        n += 1
    return n


CHAT = FORMATS.add(
    DataFormat(
        name="chat",
        options=ChatOptions,
        load=load,
        description="conversations of system/user/assistant messages; loss on assistant turns",
    )
)
