"""Named chat templates for models whose tokenizer has none (or a job that wants another): Jinja
strings in the form transformers' `apply_chat_template` renders, like a tokenizer's own."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    jinja: str
    # Control strings the template writes; a model trained on them wants each as one token.
    markers: tuple[str, ...]


# ChatML (OpenAI's format; Qwen, SmolLM2, many others): no BOS, every turn closed by <|im_end|>.
CHATML = ChatTemplate(
    name="chatml",
    jinja=(
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    ),
    markers=("<|im_start|>", "<|im_end|>"),
)

# Llama 3 Instruct: BOS, then headers; the content is trimmed and closed by <|eot_id|>.
LLAMA3 = ChatTemplate(
    name="llama3",
    jinja=(
        "{{- bos_token if bos_token is defined else '' -}}"
        "{%- for message in messages -%}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{{- message['content'] | trim -}}"
        "{{ '<|eot_id|>' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{%- endif -%}"
    ),
    markers=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)

NAMED = {t.name: t for t in (CHATML, LLAMA3)}
