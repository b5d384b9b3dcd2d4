"""Reading manifests: YAML 1.2 numbers, pruned nulls, one clear line per problem."""

from kubetune.api.manifests import Document, problems, prune_nulls, read_documents

JOB = """
apiVersion: kubetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: job}
spec:
  model: {hubRef: {name: hub}, modelId: m}
  data: {train: s3://bucket/train/}
"""


def only(text):
    (doc,) = read_documents("f.yaml", text)
    return doc


def test_exponent_floats_read_as_numbers_like_kubectl():
    doc = only(JOB + "  hyperparameters: {learning_rate: 2e-4, lora_dropout: 1E-1}\n")
    assert doc.body["spec"]["hyperparameters"] == {"learning_rate": 2e-4, "lora_dropout": 0.1}
    assert problems(doc) == []


def test_quoted_numbers_and_booleans_are_not_coerced():
    doc = only(JOB + '  hyperparameters: {epoch: "5", instruction_tuned: "yes"}\n')
    assert problems(doc) == [
        "spec.hyperparameters.epoch: '5': must be an integer",
        "spec.hyperparameters.instruction_tuned: 'yes': must be a boolean (true or false)",
    ]


def test_nulls_are_pruned_like_the_api_server_does():
    assert prune_nulls({"a": None, "b": {"c": None, "d": 1}, "e": [{"f": None}]}) == {
        "b": {"d": 1},
        "e": [{}],
    }
    doc = only(JOB + "  hyperparameters: {epoch: null}\n  suspend: null\n")
    assert problems(doc) == []


def test_problem_lines_name_path_value_and_rule():
    doc = only(JOB + "  hyperparameters: {lora_dropout: 1.5}\n  resources: {nodes: 0}\n")
    assert problems(doc) == [
        "spec.hyperparameters.lora_dropout: 1.5: must be < 1",
        "spec.resources.nodes: 0: must be >= 1",
    ]


def test_unknown_and_missing_fields():
    doc = only(JOB.replace("  data: {train: s3://bucket/train/}\n", "  dataset: x\n"))
    assert problems(doc) == [
        "spec.data: required field is missing",
        "spec.dataset: unknown field",
    ]


def test_int_or_string_reports_only_the_branch_the_value_took():
    doc = only(JOB + "  resources: {cpu: 8, memory: 12XB}\n")
    assert problems(doc) == [
        "spec.resources.memory: '12XB': must be a Kubernetes quantity such as 8, 500m, 32Gi"
    ]


def test_list_items_are_indexed_like_kubectl():
    hub = """
apiVersion: kubetune.io/v1alpha1
kind: ModelHub
metadata: {name: hub}
spec:
  models:
  - {modelId: a, source: s3://bucket/a/}
  - {modelId: b}
"""
    assert problems(only(hub)) == ["spec.models[1]: give exactly one of source and reference"]


def test_documents_are_labelled_by_kind_and_name():
    docs = list(read_documents("f.yaml", JOB + "---\n---\n- x\n"))
    assert [d.label for d in docs] == ["FineTuneJob/job", "document 3"]


def test_yaml_syntax_error_is_one_line_with_position():
    (doc,) = read_documents("f.yaml", "a: [\n")
    (line,) = problems(doc)
    # libyaml's wording ("did not find expected node content"), or PyYAML's without libyaml
    assert line.startswith("invalid YAML: line 2, column 1: ") and "node content" in line, line


def test_other_kinds_and_non_objects():
    assert problems(Document("f", 0, {"apiVersion": "v1", "kind": "Namespace"})) == [
        "apiVersion 'v1', kind 'Namespace' is not a kubetune kind "
        "(expected FineTuneJob or ModelHub in kubetune.io/v1alpha1)"
    ]
    assert problems(Document("f", 0, "text")) == [
        "expected a Kubernetes object (a mapping), got str"
    ]


def test_missing_name():
    doc = only(JOB.replace("metadata: {name: job}", "metadata: {}"))
    assert problems(doc) == ["metadata.name: required field is missing"]
