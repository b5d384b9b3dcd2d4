"""`kubetune validate FILE...`: check manifests offline with the API server's verdicts."""

import sys
from pathlib import Path

from kubetune.api.manifests import Document, kind_of, problems, read_documents, read_file
from kubetune.api.v1alpha1.trainer_config import DATA_CHANNELS


def register(commands) -> None:
    cmd = commands.add_parser(
        "validate",
        help="check FineTuneJob / ModelHub manifests",
        description="Check FineTuneJob and ModelHub manifests (multi-document YAML) against the "
        "kubetune.io/v1alpha1 API, with the same rules as the installed CRDs. Exit 0 when all "
        "are valid, 1 with one line per problem otherwise.",
    )
    cmd.add_argument("files", nargs="+", metavar="FILE", help="YAML file, folder of them, or -")
    cmd.add_argument(
        "--cluster",
        action="store_true",
        help="also apply the operator's rules for cluster mode (only s3:// URIs)",
    )
    cmd.add_argument(
        "--ignore-other-kinds",
        action="store_true",
        help="skip objects of other kinds (e.g. Namespaces in a GitOps folder) instead of failing",
    )
    cmd.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    cmd.set_defaults(run=run)


def run(args) -> int:
    broken = 0
    for doc in _documents(args.files):
        if args.ignore_other_kinds and doc.error is None and kind_of(doc.body) is None:
            continue
        found = problems(doc)
        if args.cluster and not found:
            found = cluster_problems(doc.body)
        for problem in found:
            print(f"{doc.source}: {doc.label}: {problem}")
        if found:
            broken += 1
        elif not args.quiet:
            print(f"{doc.source}: {doc.label}: valid")
    return 1 if broken else 0


def cluster_problems(body: dict) -> list[str]:
    """The operator runs in a cluster, where a file:// URI points into nobody's disk."""
    spec = body.get("spec", {})
    data = spec.get("data") or {}
    uris = {f"spec.data.{name}": data.get(name) for name in DATA_CHANNELS}
    uris["spec.output.uri"] = (spec.get("output") or {}).get("uri")
    for i, model in enumerate(spec.get("models", []) if body.get("kind") == "ModelHub" else []):
        uris[f"spec.models.{i}.source"] = model.get("source")
    return [
        f"{field}: {uri!r}: must be an s3:// URI in a cluster (file:// works in local mode only)"
        for field, uri in uris.items()
        if isinstance(uri, str) and uri.startswith("file://")
    ]


def _documents(names: list[str]):
    for name in names:
        if name == "-":
            yield from read_documents("<stdin>", sys.stdin.read())
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
            if not files:
                yield Document(name, 0, error="no .yaml or .yml files in this folder")
            for file in files:
                yield from read_file(file)
        else:
            yield from read_file(path)
