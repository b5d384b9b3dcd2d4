"""`kubetune validate` as a user runs it: the real command, real files, exit codes and lines."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
JOB = yaml.safe_load((REPO / "examples" / "finetunejob-instruction.yaml").read_text())


def kubetune(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "kubetune.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=REPO,
        timeout=60,
    )


def write_job(tmp_path, hyperparameters=None, **spec):
    job = copy.deepcopy(JOB)
    job["spec"]["hyperparameters"].update(hyperparameters or {})
    job["spec"].update(spec)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_examples_are_valid():
    result = kubetune("validate", *map(str, EXAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr
    documents = sum(path.read_text().count("\nkind: ") for path in EXAMPLES)
    assert result.stdout.count(": valid\n") == documents >= len(EXAMPLES)


def test_cluster_examples_are_valid_for_a_cluster_and_local_ones_are_not():
    cluster_examples = sorted(str(p) for p in Path("examples").glob("*.yaml"))
    assert kubetune("validate", "--cluster", *cluster_examples).returncode == 0
    # The quick start trains on this machine (file:// URIs), which --cluster rightly refuses.
    assert kubetune("validate", "--cluster", "examples/quickstart/").returncode == 1


# One broken rule of the DESIGN.md hyperparameter table at a time: (field, value, line tail).
@pytest.mark.parametrize(
    "field, value, tail",
    [
        ("epoch", 0, "0: must be >= 1"),
        ("learning_rate", 0, "0: must be > 0"),
        ("instruction_tuned", "yes", "'yes': must be a boolean (true or false)"),
        ("per_device_train_batch_size", 0, "0: must be >= 1"),
        ("per_device_eval_batch_size", 0, "0: must be >= 1"),
        ("max_train_samples", 0, "0: must be -1 or >= 1"),
        ("max_val_samples", -5, "-5: must be -1 or >= 1"),
        ("max_input_length", 0, "0: must be -1 or >= 1"),
        ("validation_split_ratio", 1.0, "1.0: must be < 1"),
        ("train_data_split_seed", "0", "'0': must be an integer"),
        ("preprocessing_num_workers", 0, "0: must be >= 1"),
        ("lora_r", 0, "0: must be >= 1"),
        ("lora_alpha", 0, "0: must be >= 1"),
        ("lora_dropout", 1.5, "1.5: must be < 1"),
        ("int8_quantization", "no", "'no': must be a boolean (true or false)"),
        ("enable_fsdp", 1, "1: must be a boolean (true or false)"),
    ],
)
def test_each_broken_hyperparameter_rule_names_its_field(tmp_path, field, value, tail):
    path = write_job(tmp_path, {field: value})
    result = kubetune("validate", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}: FineTuneJob/support-bot: spec.hyperparameters.{field}: {tail}"
    ]
    assert result.stderr == ""


def test_int8_with_fsdp(tmp_path):
    result = kubetune(
        "validate", str(write_job(tmp_path, {"int8_quantization": True, "enable_fsdp": True}))
    )
    assert result.returncode == 1
    assert "spec.hyperparameters: int8_quantization and enable_fsdp cannot both be true" in (
        result.stdout
    )


def test_resources_mix(tmp_path):
    path = write_job(tmp_path, resources={"instanceType": "g5.12xlarge", "accelerator": "nvidia"})
    result = kubetune("validate", str(path))
    assert result.returncode == 1
    assert "spec.resources: give either instanceType or accelerator" in result.stdout


def test_file_uris_pass_the_schema_but_not_cluster_mode(tmp_path):
    path = write_job(tmp_path, data={"train": "file:///data/train/"})
    assert kubetune("validate", str(path)).returncode == 0
    result = kubetune("validate", "--cluster", str(path))
    assert result.returncode == 1
    assert "spec.data.train: 'file:///data/train/': must be an s3:// URI in a cluster" in (
        result.stdout
    )


def test_multi_document_stdin_and_quiet():
    text = "\n---\n".join(p.read_text() for p in EXAMPLES)
    result = kubetune("validate", "-q", "-", stdin=text)
    assert (result.returncode, result.stdout) == (0, "")


def test_syntax_errors_unknown_kinds_and_missing_files_never_trace_back(tmp_path):
    (tmp_path / "broken.yaml").write_text("spec: [\n")
    (tmp_path / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    result = kubetune(
        "validate",
        str(tmp_path / "broken.yaml"),
        str(tmp_path / "other.yaml"),
        str(tmp_path / "absent.yaml"),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'broken.yaml'}: document 1: invalid YAML: line 2")
    assert lines[1] == (
        f"{tmp_path / 'other.yaml'}: ConfigMap/c: apiVersion 'v1', kind 'ConfigMap' is not a "
        "kubetune kind (expected FineTuneJob or ModelHub in kubetune.io/v1alpha1)"
    )
    assert lines[2].startswith(f"{tmp_path / 'absent.yaml'}: document 1: cannot read:")


def test_other_kinds_can_be_skipped_in_a_gitops_folder(tmp_path):
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    write_job(tmp_path)
    result = kubetune("validate", "--ignore-other-kinds", str(tmp_path))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'job.yaml'}: FineTuneJob/support-bot: valid"
    ]


def test_crds_command_prints_exactly_the_committed_crds():
    result = kubetune("crds")
    assert result.returncode == 0
    committed = [
        (REPO / "crds" / name).read_text()
        for name in ("kubetune.io_finetunejobs.yaml", "kubetune.io_modelhubs.yaml")
    ]
    assert result.stdout == "---\n".join(committed), "kubetune crds != crds/: run `make crds`"
