"""`kubetune render`: the operator's children for a job, printed from the operator's own
resolve and render code, as plain YAML a reviewer (or kubectl) reads."""

import json
import re
from pathlib import Path

import pytest
import yaml

from kubetune.api.v1alpha1 import FineTuneJob, ModelHub
from kubetune.config import OperatorConfig, load_config
from kubetune.render.configmap import render_configmap
from kubetune.render.model_access import render_model_urls_secret
from kubetune.render.pytorchjob import render_pytorchjob
from kubetune.render.trainjob import render_trainjob
from kubetune.resolve.plan import plan
from tests.support.cli import kubetune

REPO = Path(__file__).resolve().parents[2]
HUB = REPO / "examples" / "modelhub.yaml"
JOB = REPO / "examples" / "finetunejob-instruction.yaml"


class Hubs:
    """The example hub, as the operator's resolver would read it from a cluster."""

    def __init__(self, *paths):
        docs = [d for p in paths for d in yaml.safe_load_all(p.read_text())]
        self.hubs = {
            (d["metadata"]["namespace"], d["metadata"]["name"]): ModelHub.model_validate(d)
            for d in docs
            if d["kind"] == "ModelHub"
        }

    def hub(self, namespace, name):
        return self.hubs.get((namespace, name))

    def namespace_labels(self, namespace):
        return {}


def expected(job_path, hub_paths, config, uid):
    (body,) = [d for d in yaml.safe_load_all(job_path.read_text()) if d["kind"] == "FineTuneJob"]
    job = FineTuneJob.model_validate(body)
    resolved = plan(job, uid, Hubs(*hub_paths), config, require_ready=False)
    owner = {"name": job.metadata.name, "uid": uid}
    return [
        render_configmap(resolved, owner),
        render_model_urls_secret(resolved, owner, None),  # the example hub's access: presigned
        render_pytorchjob(resolved, config, owner),
    ]


def test_prints_what_the_operator_renders_for_the_same_plan():
    result = kubetune("render", JOB, "--hub", HUB, "--uid", "uid-1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # s3:// URIs: nothing to warn about
    configmap, secret, pytorchjob = yaml.safe_load_all(result.stdout)
    assert [configmap, secret, pytorchjob] == expected(JOB, [HUB], OperatorConfig(), "uid-1")
    assert pytorchjob["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    # The model URLs' Secret: its name and key, and no value (the operator signs at run time).
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "support-bot-model-urls")
    assert list(secret["stringData"]) == ["urls.json"]
    assert "X-Amz" not in result.stdout and "https://" not in secret["stringData"]["urls.json"]


def test_backend_trainjob_prints_the_trainjob_the_operator_would_create(tmp_path):
    result = kubetune("render", JOB, "--hub", HUB, "--uid", "uid-1", "--backend", "trainjob")
    assert result.returncode == 0, result.stderr
    configmap, _, trainjob = yaml.safe_load_all(result.stdout)
    cm, _, _ = expected(JOB, [HUB], OperatorConfig(), "uid-1")
    (body,) = [d for d in yaml.safe_load_all(JOB.read_text()) if d["kind"] == "FineTuneJob"]
    resolved = plan(FineTuneJob.model_validate(body), "uid-1", Hubs(HUB), OperatorConfig(),
                    require_ready=False)  # fmt: skip
    owner = {"name": body["metadata"]["name"], "uid": "uid-1"}
    assert [configmap, trainjob] == [cm, render_trainjob(resolved, OperatorConfig(), owner)]
    # The config's trainingBackend is the default; pytorchjob where it says auto.
    config = tmp_path / "operator.yaml"
    config.write_text("trainingBackend: trainjob\n")
    by_config = kubetune("render", JOB, "--hub", HUB, "--uid", "uid-1", "--config", config)
    assert by_config.stdout == result.stdout
    assert "kind: PyTorchJob" in kubetune("render", JOB, "--hub", HUB).stdout


def test_backend_trainjob_warns_of_what_a_trainjob_cannot_carry(tmp_path):
    job = yaml.safe_load(JOB.read_text())
    job["spec"]["scheduling"] = {"priorityClassName": "low"}
    job["spec"]["runPolicy"] = {"ttlSecondsAfterFinished": 600}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = kubetune("render", path, "--hub", HUB, "--backend", "trainjob")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("kubetune: warning: TrainJob: spec.scheduling.priorityClassName")
    assert "ttlSecondsAfterFinished is not applied" in lines[1]
    assert kubetune("render", path, "--hub", HUB, "--backend", "pytorchjob").stderr == ""


def test_yaml_has_no_anchors_and_the_trainer_config_reads_as_json():
    result = kubetune("render", JOB, "--hub", HUB)
    assert not re.search(r"[&*]id\d+", result.stdout)
    assert "  config.json: |-\n    {\n" in result.stdout  # a literal block, not a quoted line
    configmap = next(yaml.safe_load_all(result.stdout))
    config = json.loads(configmap["data"]["config.json"])
    assert config["model"]["source"] == "s3://models/meta-llama/Llama-3.2-1B/"
    assert config["hyperparameters"]["lora_r"] == 16  # the job's own, over the hub's default


def test_uid_defaults_to_the_one_local_mode_derives():
    first, second = kubetune("render", JOB, "--hub", HUB), kubetune("render", JOB, "--hub", HUB)
    assert first.stdout == second.stdout
    uid = json.loads(next(yaml.safe_load_all(first.stdout))["data"]["config.json"])["job"]["uid"]
    assert re.fullmatch(r"[0-9a-f-]{36}", uid)


def test_operator_config_and_several_nodes(tmp_path):
    config = tmp_path / "operator.yaml"
    config.write_text("defaultQueueName: shared\nimages: {nvidia: registry.local/trainer:1}\n")
    job = yaml.safe_load(JOB.read_text())
    job["spec"]["resources"] = {"accelerator": "nvidia", "acceleratorsPerNode": 4, "nodes": 2}
    del job["spec"]["scheduling"]
    job_path = tmp_path / "job.yaml"
    # One file, several documents: the hub travels with the job.
    job_path.write_text(HUB.read_text() + "\n---\n" + yaml.safe_dump(job))
    result = kubetune("render", job_path, "--config", config, "--uid", "u")
    assert result.returncode == 0, result.stderr
    _, _, pytorchjob = yaml.safe_load_all(result.stdout)
    assert pytorchjob == expected(job_path, [job_path], load_config(config), "u")[2]
    assert pytorchjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "shared"
    assert pytorchjob["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert not re.search(r"[&*]id\d+", result.stdout)  # Master and Worker templates: no alias


def test_sharing_by_selector_takes_the_namespace_labels_given(tmp_path):
    job = yaml.safe_load(JOB.read_text())
    job["metadata"]["namespace"] = "team-b"  # not listed; the hub selects kubetune.io/hub=curated
    job_path = tmp_path / "job.yaml"
    job_path.write_text(yaml.safe_dump(job))
    denied = kubetune("render", job_path, "--hub", HUB)
    assert denied.returncode == 2 and denied.stdout == ""
    assert denied.stderr == (
        "kubetune: error: HubAccessDenied: ModelHub ml-platform/curated does not exist or is not "
        "shared with "
        "namespace team-b: its spec.sharedWith must list the namespace or select it by label\n"
    )
    allowed = kubetune(
        "render", job_path, "--hub", HUB, "--namespace-label", "kubetune.io/hub=curated"
    )
    assert allowed.returncode == 0, allowed.stderr


def test_local_file_uris_render_with_a_warning(tmp_path):
    job = yaml.safe_load(JOB.read_text())
    job["spec"]["data"] = {"train": "file:///data/train"}
    job_path = tmp_path / "job.yaml"
    job_path.write_text(yaml.safe_dump(job))
    result = kubetune("render", job_path, "--hub", HUB)
    assert result.returncode == 0
    assert result.stderr == (
        f"kubetune: warning: {job_path}: FineTuneJob/support-bot: spec.data.train: "
        "'file:///data/train': must be an s3:// URI in a cluster (file:// works in local mode "
        "only)\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ([JOB], "HubNotFound: ModelHub ml-platform/curated is not among the hubs given (none): "
         "pass the YAML file that defines it with --hub HUB.yaml"),
        ([JOB, "--hub", JOB], "FineTuneJob/support-bot: --hub files hold ModelHubs; give the job "
         "as JOB.yaml"),
        ([HUB, "--hub", HUB], "expected one FineTuneJob, found 0 (none)"),
        ([JOB, "--hub", HUB, "--config", "/nowhere.yaml"], "/nowhere.yaml: No such file or "
         "directory"),
        ([JOB, "--hub", HUB, "--hub", HUB], "ModelHubs ml-platform/curated, ml-platform/public "
         "defined more than once"),
    ],
)  # fmt: skip
def test_problems_are_one_line_each(args, message):
    result = kubetune("render", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kubetune: error: ")
    assert message in result.stderr
