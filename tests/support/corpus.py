"""The API corpus (tests/api/corpus): one manifest per file, `valid/` and `invalid/` (each
invalid one opens with `# expect: FIELD.PATH`), and updates of a stored FineTuneJob; judged by
pydantic, by our CRD emulation (tests/api) and by the real kube-apiserver (tests/cluster)."""

import re
from pathlib import Path

from kubetune.api.manifests import Document, read_documents

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "api" / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
EXAMPLE_JOB = REPO / "examples" / "finetunejob-instruction.yaml"


def load(path: Path) -> Document:
    """The file's only object, read as `kubetune validate` reads it (YAML 1.2 numbers)."""
    documents = list(read_documents(str(path), path.read_text(encoding="utf-8")))
    assert len(documents) == 1 and documents[0].error is None, f"{path}: one object per file"
    return documents[0]


def expected_field(path: Path) -> str:
    found = re.match(r"# expect: (\S+)\n", path.read_text(encoding="utf-8"))
    assert found, f"{path.name}: an invalid manifest opens with `# expect: FIELD.PATH`"
    return found.group(1)


# Updates of a stored FineTuneJob: (name, change to the stored spec first, then the update,
# the field named when refused, or None when the update is accepted).
UPDATES = [
    ("hyperparameter-changed", None, lambda s: s["hyperparameters"].update(epoch=5),
     "spec.hyperparameters"),
    ("hyperparameters-removed", None, lambda s: s.pop("hyperparameters"), "spec.hyperparameters"),
    ("train-data-changed", None, lambda s: s["data"].update(train="s3://datasets/support/v2/"),
     "spec.data"),
    ("validation-data-added", lambda s: s["data"].pop("validation"),
     lambda s: s["data"].update(validation="s3://datasets/support/val/"), "spec.data"),
    ("test-data-added", None, lambda s: s["data"].update(test="s3://datasets/support/test/"),
     "spec.data"),
    ("model-changed", None, lambda s: s["model"].update(modelId="mistral-7b"), "spec.model"),
    ("resources-added", lambda s: s.pop("resources"),
     lambda s: s.update(resources={"accelerator": "nvidia", "acceleratorsPerNode": 1}),
     "spec.resources"),
    ("output-changed", None, lambda s: s["output"].update(uri="s3://artifacts/other/"),
     "spec.output"),
    ("eula-acceptance-withdrawn", None, lambda s: s.update(acceptEula=False), "spec.acceptEula"),
    ("suspended", None, lambda s: s.update(suspend=True), None),
    ("suspend-added", lambda s: s.pop("suspend"), lambda s: s.update(suspend=True), None),
    ("run-policy-changed", None, lambda s: s["runPolicy"].update(backoffLimit=10), None),
    ("scheduling-changed", None, lambda s: s["scheduling"].update(queueName="team-b"), None),
    ("scheduling-removed", None, lambda s: s.pop("scheduling"), None),
    ("learning-rate-respelled", lambda s: s["hyperparameters"].update(learning_rate=0.0002),
     lambda s: s["hyperparameters"].update(learning_rate=2e-4), None),
    ("nothing-changed", None, lambda s: None, None),
]
