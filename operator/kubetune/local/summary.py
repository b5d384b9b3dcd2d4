"""A finished job's figures from its artifacts: metrics.json and MANIFEST.json under the
output URI, on s3:// or file:// alike. The short summary `kubetune run --local` ends with and
the full table `kubetune report` prints."""

import json
from dataclasses import dataclass

from kubetune.local.files import LocalError
from kubetune.storage import StorageError, join_uri, open_store


class NotFinished(LocalError):
    """No MANIFEST.json (yet): the job runs, stopped, or never started there."""


@dataclass
class Outputs:
    uri: str
    metrics: dict
    manifest: dict


def read_outputs(uri: str) -> Outputs:
    """metrics.json and MANIFEST.json of a finished job; NotFinished or LocalError if not."""
    try:
        store = open_store(uri)
        manifest_uri = join_uri(uri, "MANIFEST.json")
        if not store.exists(manifest_uri):
            progress_uri = join_uri(uri, "progress.json")
            if not store.exists(progress_uri):
                raise NotFinished(
                    f"not finished: no MANIFEST.json at {manifest_uri}, and no progress.json: "
                    "no job has trained there (yet)"
                )
            p = json.loads(store.read_bytes(progress_uri))
            raise NotFinished(
                f"not finished: no MANIFEST.json at {manifest_uri}; progress: step "
                f"{p.get('step')} of {p.get('total_steps')} (epoch {p.get('epoch')})"
            )
        manifest = json.loads(store.read_bytes(manifest_uri))
        metrics = json.loads(store.read_bytes(join_uri(uri, "metrics.json")))
    except StorageError as err:
        raise LocalError(str(err)) from None
    except ValueError as err:
        raise LocalError(f"{uri}: an artifact is not valid JSON: {err}") from None
    return Outputs(uri, metrics, manifest)


def summary(outputs: Outputs) -> list[str]:
    """A few lines: the best epoch's figures and where the artifacts are."""
    m = outputs.metrics
    folders = sorted({f["path"].split("/")[0] + "/" for f in files(outputs) if "/" in f["path"]})
    curve = ["loss_curve.png"] if any(f["path"] == "loss_curve.png" for f in files(outputs)) else []
    return [
        f"done: best epoch {m['best_epoch']} of {len(m.get('epochs', []))}, "
        f"{m.get('steps', '?')} steps",
        f"  train loss {m['train_loss']:.4f}   eval loss {m['eval_loss']:.4f}   "
        f"perplexity {m['eval_perplexity']:.2f}   {m.get('tokens_per_second', 0):,.0f} tokens/s",
        f"  artifacts: {outputs.uri}  ({', '.join(folders + curve + ['metrics.json'])})",
        f"  details:   kubetune report {outputs.uri}",
    ]


def report(outputs: Outputs) -> list[str]:
    """Per-epoch table (best marked), throughput, and every artifact file with its size."""
    m, job = outputs.metrics, outputs.manifest.get("job", {})
    lines = [
        f"FineTuneJob {job.get('namespace')}/{job.get('name')} (uid {job.get('uid')})",
        f"output: {outputs.uri}",
        "",
        "  epoch   train loss   eval loss   perplexity",
    ]
    for e in m.get("epochs", []):
        mark = "*" if e["epoch"] == m["best_epoch"] else " "
        lines.append(
            f"{mark} {e['epoch']:>5}   {e['train_loss']:>10.4f}   {e['eval_loss']:>9.4f}   "
            f"{e['eval_perplexity']:>10.2f}"
        )
    lines += [
        f"* best epoch {m['best_epoch']}: its weights are the artifacts",
        "",
        f"steps {m.get('steps')} on {m.get('world_size', 1)} process(es); "
        f"{m.get('train_tokens', 0):,} tokens in {m.get('train_seconds', 0):.1f} s = "
        f"{m.get('tokens_per_second', 0):,.0f} tokens/s; padding "
        f"{100 * m.get('padding_fraction', 0):.1f}%",
        "",
        "artifacts (MANIFEST.json):",
    ]
    listed = files(outputs)
    width = max((len(f["path"]) for f in listed), default=0)
    lines += [f"  {f['path']:<{width}}  {size(f['size']):>9}" for f in listed]
    lines.append(f"  {len(listed)} files, {size(sum(f['size'] for f in listed))}")
    return lines


def files(outputs: Outputs) -> list[dict]:
    return outputs.manifest.get("files", [])


def size(n: int) -> str:
    """Decimal units, as the trainer's log: 1.2 MB is 1,200,000 bytes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
