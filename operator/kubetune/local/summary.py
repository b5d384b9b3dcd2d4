"""A finished job's figures from its artifacts: metrics.json and MANIFEST.json under the
output URI, on s3:// or file:// alike. The short summary `kubetune run --local` ends with and
the full table `kubetune report` prints."""

from dataclasses import dataclass, field
from typing import TypeVar

from kubetune.api.v1alpha1 import ArtifactManifest, ProgressReport, SampleAnswer, TrainingMetrics
from kubetune.api.v1alpha1.outputs import (
    LOSS_CURVE_PNG,
    MANIFEST,
    MERGED,
    METRICS,
    PROGRESS,
    SAMPLES,
    InvalidOutput,
    OutputFile,
)
from kubetune.local.files import LocalError
from kubetune.storage import StorageError, join_uri, open_store

T = TypeVar("T", bound=OutputFile)
SHOWN_CHARS = 100  # of a sample's prompt, reference or answer: one terminal line each


class NotFinished(LocalError):
    """No MANIFEST.json (yet): the job runs, stopped, or never started there."""


@dataclass
class Outputs:
    uri: str
    metrics: TrainingMetrics
    manifest: ArtifactManifest
    answers: list[SampleAnswer] = field(default_factory=list)  # samples.jsonl, if listed


def read_outputs(uri: str) -> Outputs:
    """metrics.json and MANIFEST.json of a finished job; NotFinished or LocalError if not."""
    try:
        store = open_store(uri)
        manifest_uri = join_uri(uri, MANIFEST)
        if not store.exists(manifest_uri):
            progress_uri = join_uri(uri, PROGRESS)
            if not store.exists(progress_uri):
                raise NotFinished(
                    f"not finished: no {MANIFEST} at {manifest_uri}, and no {PROGRESS}: "
                    "no job has trained there (yet)"
                )
            p = read(store, progress_uri, ProgressReport)
            said = {"failed": f"; failed: {p.message}", "stopped": f"; {p.message}"}
            ended = said.get(p.state, "") if p.message else ""
            raise NotFinished(
                f"not finished: no {MANIFEST} at {manifest_uri}; progress: step "
                f"{p.step} of {p.total_steps} (epoch {p.epoch}){ended}"
            )
        manifest = read(store, manifest_uri, ArtifactManifest)
        metrics = read(store, join_uri(uri, METRICS), TrainingMetrics)
        listed = any(f.path == SAMPLES for f in manifest.files)
        answers = read_answers(store, join_uri(uri, SAMPLES)) if listed else []
    except StorageError as err:
        raise LocalError(str(err)) from None
    return Outputs(uri, metrics, manifest, answers)


def read_answers(store, uri: str) -> list[SampleAnswer]:
    """samples.jsonl's lines as their type; LocalError names the line that is not."""
    lines = store.read_bytes(uri).decode("utf-8", errors="replace").splitlines()
    try:
        return [
            SampleAnswer.read(line, f"{uri}, line {n}")
            for n, line in enumerate(lines, start=1)
            if line.strip()
        ]
    except InvalidOutput as err:
        raise LocalError(str(err)) from None


def finished_by(uri: str, uid: str) -> bool:
    """Does uri hold the complete artifacts of the job with this uid? False when it cannot
    tell (storage trouble): the trainer then finds out and says why."""
    try:
        store = open_store(uri)
        manifest_uri = join_uri(uri, MANIFEST)
        return (
            store.exists(manifest_uri)
            and read(store, manifest_uri, ArtifactManifest).job.uid == uid
        )
    except (StorageError, LocalError):
        return False


def read(store, uri: str, kind: type[T]) -> T:
    """The file at uri as its type, or LocalError saying why not."""
    try:
        return kind.read(store.read_bytes(uri), uri)
    except InvalidOutput as err:
        raise LocalError(str(err)) from None


def summary(outputs: Outputs) -> list[str]:
    """A few lines: the best epoch's figures and where the artifacts are."""
    m, listed = outputs.metrics, files(outputs)
    curve = [LOSS_CURVE_PNG] if any(f.path == LOSS_CURVE_PNG for f in listed) else []
    test = [f"  {test_line(m)}"] if m.test_loss is not None else []
    return [
        f"done: best epoch {m.best_epoch} of {len(m.epochs)}, {m.steps} steps",
        f"  train loss {m.train_loss:.4f}   eval loss {m.eval_loss:.4f}   "
        f"perplexity {m.eval_perplexity:.2f}   {m.tokens_per_second:,.0f} tokens/s",
        *test,
        f"  artifacts: {outputs.uri}  ({', '.join(folders(outputs.manifest) + curve + [METRICS])})",
        f"  details:   kubetune report {outputs.uri}",
    ]


def test_line(m: TrainingMetrics) -> str:
    return (
        f"test loss {m.test_loss:.4f}   perplexity {m.test_perplexity:.2f}   "
        f"({m.test_samples} test samples, the best epoch's weights)"
    )


def report(outputs: Outputs) -> list[str]:
    """Per-epoch table (best marked), throughput, and every artifact file with its size."""
    m, job, model = outputs.metrics, outputs.manifest.job, outputs.manifest.model
    lines = [
        f"FineTuneJob {job.namespace}/{job.name} (uid {job.uid})",
        f"output: {outputs.uri}",
        *([f"model: {model.model_id} ({model.source})"] if model else []),
        "",
        "  epoch   train loss   eval loss   perplexity",
    ]
    for e in m.epochs:
        mark = "*" if e.epoch == m.best_epoch else " "
        lines.append(
            f"{mark} {e.epoch:>5}   {e.train_loss:>10.4f}   {e.eval_loss:>9.4f}   "
            f"{e.eval_perplexity:>10.2f}"
        )
    lines += [
        f"* best epoch {m.best_epoch}: its weights are the artifacts",
        *([test_line(m)] if m.test_loss is not None else []),
        "",
        f"steps {m.steps} on {m.world_size} process(es); "
        f"{m.train_tokens:,} tokens in {m.train_seconds:.1f} s = "
        f"{m.tokens_per_second:,.0f} tokens/s; padding {100 * m.padding_fraction:.1f}%",
        "",
    ]
    lines += sample_lines(outputs.answers)
    lines.append(
        " ".join([f"artifacts ({MANIFEST}):", ", ".join(folders(outputs.manifest))]).rstrip()
    )
    listed = files(outputs)
    width = max((len(f.path) for f in listed), default=0)
    lines += [f"  {f.path:<{width}}  {size(f.size):>9}" for f in listed]
    lines.append(f"  {len(listed)} files, {size(sum(f.size for f in listed))}")
    return lines


def sample_lines(answers: list[SampleAnswer]) -> list[str]:
    """Each sample answer's prompt (its end), reference and answer, a line each, cut to fit."""
    if not answers:
        return []
    lines = [f"sample answers ({SAMPLES}, greedy):"]
    for a in answers:
        lines += [
            f"  [{a.index}] prompt:    {shown(a.prompt, tail=True)}",
            f"      reference: {shown(a.reference)}",
            f"      answer:    {shown(a.answer)}",
        ]
    return [*lines, ""]


def shown(text: str, tail: bool = False) -> str:
    """One line: whitespace runs (newlines too) as one space, other unprintable characters as
    U+FFFD (a model's answer may hold terminal escape codes), cut to SHOWN_CHARS with '...';
    `tail` keeps the end (of a prompt: the part an answer follows)."""
    flat = "".join(c if c.isprintable() else "\ufffd" for c in " ".join(text.split()))
    if len(flat) <= SHOWN_CHARS:
        return flat
    keep = SHOWN_CHARS - 3
    return "..." + flat[-keep:] if tail else flat[:keep] + "..."


def files(outputs: Outputs):
    return outputs.manifest.files


def folders(manifest: ArtifactManifest) -> list[str]:
    """The output's folders with their sizes, merged/ with its dtype: "merged/ 269.0 MB
    (bfloat16)"."""
    named = sorted({f.path.split("/")[0] for f in manifest.files if "/" in f.path})
    dtype = {MERGED: f" ({manifest.merged_dtype})"} if manifest.merged_dtype else {}
    return [f"{name}/ {size(manifest.sizes[name])}{dtype.get(name, '')}" for name in named]


def size(n: int) -> str:
    """Decimal units, as the trainer's log: 1.2 MB is 1,200,000 bytes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
