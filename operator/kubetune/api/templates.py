"""Instruction templates (JumpStart's template.json): format strings over a record's fields,
parsed safely and filled by plain lookups. Shared by the trainer, which renders training
records, and `kubetune generate`, which renders prompts the way the job was trained."""

import string

# JumpStart's default instruction template (Dolly-style records: instruction, context,
# response), used when the training folder has no template.json.
DEFAULT_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n"
)
DEFAULT_COMPLETION = " {response}"

# The default under a chat template (the chat_template hyperparameter): the template writes
# the turn headers, so the user turn is the instruction and its context, nothing more.
CHAT_PROMPT = "{instruction}\n\n{context}"
CHAT_COMPLETION = "{response}"

# A template is literal text interleaved with record field names (None: literal only).
Parts = list[tuple[str, str | None]]


class TemplateError(ValueError):
    """A template or a record that does not fit it; the message says where and why."""


def parse_format(text: str, source: str) -> Parts:
    """Split a format string into parts, refusing anything but `{plain_field_name}`.

    Attribute and index lookups (`{x.__class__}`, `{x[0]}`), positional fields (`{0}`, `{}`),
    conversions (`{x!r}`) and format specs (`{x:>9}`, which may nest fields) are refused:
    str.format on them could expose object internals, and a template has no need for them.
    """
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as e:
        reason = f"invalid format string ({e}); write {{{{ and }}}} for literal braces"
        raise TemplateError(f"{source}: {reason}") from None
    parts: Parts = []
    for literal, field, spec, conversion in pieces:
        if field is not None and (not field.isidentifier() or spec or conversion):
            placeholder = "{" + field + (f"!{conversion}" if conversion else "")
            placeholder += (f":{spec}" if spec else "") + "}"
            raise TemplateError(
                f"{source}: unsafe placeholder {placeholder}; only plain field names such as "
                "{instruction} are allowed"
            )
        parts.append((literal, field))
    return parts


def fields(parts: Parts) -> list[str]:
    """The record fields a template uses, in order of first use."""
    return list(dict.fromkeys(field for _, field in parts if field is not None))


def fill(parts: Parts, record: dict, where: str, template: str) -> str:
    """The template's text for one record. Plain dictionary lookups, never str.format: a
    record cannot reach any attribute. `where` and `template` name the record and the
    template in the error of a missing field."""
    out = []
    for literal, field in parts:
        out.append(literal)
        if field is None:
            continue
        if field not in record:
            raise TemplateError(
                f"{where}: field {field!r} used by {template} is missing from the record"
            )
        value = record[field]
        out.append("" if value is None else str(value))
    return "".join(out)
