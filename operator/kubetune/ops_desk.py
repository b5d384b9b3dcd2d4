"""The real-model quick start's sample data: the internal services of Larkspur, a made-up
company, and its ops desk's fixed answer style, as instruction records. Facts no pretrained
model can know and a style it does not have, so base and tuned answers differ at a glance.

Each question kind has training phrasings and one held-out phrasing that no training record
uses; held-out.jsonl asks those, one per service, with the expected answer as `response`.
"""

import random
from pathlib import Path

TRAIN_FILE = Path("data/ops-desk/services.jsonl")
TEMPLATE_FILE = Path("data/ops-desk/template.json")
# Outside the training folder: the trainer reads every .jsonl file in it.
HELD_OUT_FILE = Path("data/held-out.jsonl")

# The question is the user turn and the answer the assistant turn of the model's own chat
# template (the job's chat_template: tokenizer; SmolLM2's adds its default system line): the
# tuned model is asked as the base one is, and the loss is on the answer and <|im_end|>.
TEMPLATE = {"prompt": "{instruction}", "completion": "{response}"}

# Every answer opens with the tag and closes with the sign-off: the style to learn.
TAG = "[ops-desk]"
SIGN_OFF = "-- Larkspur ops desk"

# (service, what it is, owning team, port): the facts to learn.
SERVICES = [
    ("tidepool", "payments ledger", "Harbor", 7311),
    ("ferncache", "session cache", "Canopy", 6420),
    ("owlpost", "email and notification sender", "Nightjar", 8025),
    ("bramble", "product search index", "Thicket", 9270),
    ("quokka", "login and single sign-on service", "Burrow", 4443),
    ("marigold", "image resizer", "Meadow", 5190),
    ("kestrel", "batch job scheduler", "Aerie", 7702),
    ("sundial", "metrics store", "Lantern", 3090),
]

# kind: (training phrasings, held-out phrasing, answer), over a service's fields.
QUESTIONS = {
    "what": (
        ["What is {service}?", "What does {service} do?", "Tell me about {service}."],
        "Explain what the {service} service is for.",
        "{service} is Larkspur's {what}, owned by the {team} team.",
    ),
    "owner": (
        ["Who owns {service}?", "Which team is responsible for {service}?",
         "Which team runs {service}?"],
        "Who maintains {service}?",
        "{service} is owned by the {team} team; page them in #{channel}.",
    ),
    "oncall": (
        ["Who is on call for {service}?", "Where do I report a problem with {service}?",
         "{service} is throwing errors. Who do I page?"],
        "Which Slack channel should I use for {service} incidents?",
        "Page the {team} team in #{channel}; they own {service}.",
    ),
    "port": (
        ["What port does {service} listen on?", "Which port is {service} on?",
         "How do I check that {service} is healthy?"],
        "What's the port number of {service}?",
        "{service} listens on port {port}; check it with `curl localhost:{port}/healthz`.",
    ),
    "restart": (
        ["How do I restart {service}?", "{service} is stuck. How do I bring it back?",
         "What is the runbook command for {service}?"],
        "Give me the command to restart {service} safely.",
        "Run `lark restart {service} --drain`, then watch #{channel}.",
    ),
}  # fmt: skip


def _fields(service: str, what: str, team: str, port: int) -> dict:
    return {"service": service, "what": what, "team": team, "port": port,
            "channel": f"{team.lower()}-oncall"}  # fmt: skip


def _answer(text: str, fields: dict) -> str:
    return f"{TAG} {text.format(**fields)} {SIGN_OFF}"


def training_records(seed: int = 0) -> list[dict]:
    """Every service x question kind x training phrasing (8 x 5 x 3 = 120), shuffled."""
    records = []
    for card in SERVICES:
        fields = _fields(*card)
        for phrasings, _, answer in QUESTIONS.values():
            for phrasing in phrasings:
                instruction = phrasing.format(**fields)
                records.append({"instruction": instruction, "response": _answer(answer, fields)})
    random.Random(seed).shuffle(records)
    return records


def held_out_records() -> list[dict]:
    """One new phrasing per service, the kinds in turn; `response` is the expected answer."""
    kinds = list(QUESTIONS)
    records = []
    for i, card in enumerate(SERVICES):
        fields = _fields(*card)
        _, phrasing, answer = QUESTIONS[kinds[i % len(kinds)]]
        records.append(
            {"instruction": phrasing.format(**fields), "response": _answer(answer, fields)}
        )
    return records
