"""`instruction`: .jsonl records rendered through the train channel's template.json (else
JumpStart's default template) into a prompt and a completion; the loss is on the completion
and the EOS after it. With the chat_template hyperparameter, the prompt becomes a user turn and
the completion an assistant turn of a chat template (an instruct model's own format), the loss
on the assistant turn, as the chat format does."""

import logging
from pathlib import Path

from kubetune.api.templates import CHAT_COMPLETION, CHAT_PROMPT
from kubetune.api.v1alpha1 import Hyperparameters, PromptFormat
from kubetune_trainer.formats import FORMATS, Channels, DataFormat
from kubetune_trainer.formats.chat import chat_samples, choose_template
from kubetune_trainer.formats.encoder import Encoder, effective_max_length, require_eos
from kubetune_trainer.formats.files import json_lines, read_text, visible_files
from kubetune_trainer.formats.samples import IGNORE_INDEX, DataError, Sample, Splits
from kubetune_trainer.formats.split import split_and_cap, splits
from kubetune_trainer.formats.templates import (
    DEFAULT_COMPLETION,
    DEFAULT_PROMPT,
    TEMPLATE_FILE,
    Template,
    load_template,
)
from kubetune_trainer.registry import NoOptions

log = logging.getLogger(__name__)

DEFAULTS = (DEFAULT_PROMPT, DEFAULT_COMPLETION)  # JumpStart's, for plain text


def load(channels: Channels, hp: Hyperparameters, tokenizer, options: NoOptions) -> Splits:
    """Caps count records (the user's unit); the split happens before tokenization too."""
    max_length = effective_max_length(hp, tokenizer)
    require_eos(tokenizer)
    train_dir, validation_dir = channels.train, channels.validation
    chat = hp.chat_template is not None
    template = load_template(train_dir, (CHAT_PROMPT, CHAT_COMPLETION) if chat else DEFAULTS)
    jinja = None
    if chat:
        name, jinja = choose_template(
            tokenizer, hp.chat_template, "the chat_template hyperparameter"
        )
        log.info("instruction: records as chat turns (%s template)", name)
    with Encoder(tokenizer, hp.preprocessing_num_workers) as encoder:

        def samples(pairs: list[tuple[str, str]], source: Path) -> list[Sample]:
            if jinja is None:
                return instruction_samples(pairs, encoder, max_length, f"{source}")
            turns = as_turns(pairs)
            return chat_samples(turns, encoder, jinja, max_length, f"{source}", "records")

        train = instruction_pairs(train_dir, template)
        val = instruction_pairs(validation_dir, template) if validation_dir else None
        train, val = split_and_cap(train, val, hp, train_dir)
        train, val = samples(train, train_dir), samples(val, validation_dir or train_dir)
        test = None
        if channels.test:
            test = samples(instruction_pairs(channels.test, template), channels.test)
    prompt = PromptFormat(
        data_format="instruction",
        prompt=template.prompt_text,
        completion=template.completion_text,
        chat_template=jinja,
    )
    return splits(train, val, max_length, test, prompt)


def as_turns(pairs: list[tuple[str, str]]) -> list[tuple[str, list[dict[str, str]]]]:
    """(where, messages) as the chat format renders them: the template's text, trimmed (the
    chat template writes the separators)."""
    return [
        (f"record {n}", [{"role": "user", "content": p.strip()},
                         {"role": "assistant", "content": c.strip()}])
        for n, (p, c) in enumerate(pairs, start=1)
    ]  # fmt: skip


def instruction_pairs(folder: Path, template: Template) -> list[tuple[str, str]]:
    """(prompt, completion) strings of every record in the folder's .jsonl files, in order."""
    files = visible_files(folder)
    others = [p.name for p in files if p.suffix.lower() != ".jsonl" and p.name != TEMPLATE_FILE]
    if others:
        raise DataError(
            f"{folder}: unsupported file(s) {', '.join(others)}; instruction tuning reads "
            f".jsonl files and an optional {TEMPLATE_FILE}"
        )
    jsonl = [p for p in files if p.suffix.lower() == ".jsonl"]
    if not jsonl:
        raise DataError(f"{folder}: no data file (instruction tuning expects .jsonl files)")
    own_template = folder / TEMPLATE_FILE
    if own_template.is_file() and own_template != template.path:
        # The model is evaluated in the format it is trained in: the train channel's template.
        log.warning("%s: ignored; the training channel's template applies", own_template)
    pairs = []
    for path in jsonl:
        for where, record in json_lines(path, read_text(path)):
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise DataError(f"{path}, {where}: expected a JSON object, got {kind}")
            pairs.append(template.render(record, f"{path}, {where}"))
    return pairs


def instruction_samples(
    pairs: list[tuple[str, str]], encoder: Encoder, max_length: int, source: str
) -> list[Sample]:
    # Encoded apart so the prompt/completion boundary is exact; only the prompt gets BOS.
    prompts = encoder.encode([p for p, _ in pairs], add_special_tokens=True)
    completions = encoder.encode([c for _, c in pairs], add_special_tokens=False)
    eos = encoder.tokenizer.eos_token_id
    samples, dropped, truncated = [], 0, 0
    for prompt, completion in zip(prompts, completions, strict=True):
        if len(prompt) >= max_length:  # no room left for a single completion token
            dropped += 1
            continue
        full = prompt + completion + [eos]
        truncated += len(full) > max_length
        input_ids = full[:max_length]
        labels = [IGNORE_INDEX] * len(prompt) + input_ids[len(prompt) :]
        samples.append(Sample(input_ids=input_ids, labels=labels))
    if dropped or truncated:
        log.warning(
            "%s: %d of %d samples dropped (prompt of %d tokens or more), %d truncated to %d "
            "tokens (max_input_length)",
            source, dropped, len(pairs), max_length, truncated, max_length,
        )  # fmt: skip
    if not samples:
        raise DataError(
            f"{source}: no sample left: all {len(pairs)} records have a prompt of {max_length} "
            "tokens or more (max_input_length)"
        )
    return samples


INSTRUCTION = FORMATS.add(
    DataFormat(
        name="instruction",
        options=NoOptions,
        load=load,
        description=f".jsonl records through {TEMPLATE_FILE}; loss on the completion",
    )
)
