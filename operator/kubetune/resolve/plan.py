"""Everything the operator (or local mode) needs to start a FineTuneJob's training, resolved
once: model, hyperparameters, compute, output and the TrainerConfig the trainer reads."""

from dataclasses import dataclass

from kubetune.api.v1alpha1 import FineTuneJob, Hyperparameters, TrainerConfig
from kubetune.api.v1alpha1.modelhub import access_mode
from kubetune.api.v1alpha1.trainer_config import DATA_CHANNELS
from kubetune.config import OperatorConfig
from kubetune.resolve.compute import Compute, resolve_compute
from kubetune.resolve.errors import ResolveError
from kubetune.resolve.hubs import Hubs, ResolvedModel, check_job, resolve_model
from kubetune.resolve.hyperparameters import resolve_hyperparameters


@dataclass(frozen=True)
class Plan:
    job: FineTuneJob
    model: ResolvedModel
    hyperparameters: Hyperparameters
    compute: Compute
    output_uri: str
    secrets: dict[str, str]  # channel (model, data, output) -> Secret name in the job namespace
    trainer_config: TrainerConfig
    # How the pods read the model (the source hub's storage.access, defaults applied): only
    # with "secret" is the hub's Secret among `secrets`; "presigned": the operator's URLs.
    model_access: str = "podIdentity"


def plan(
    job: FineTuneJob,
    uid: str,
    hubs: Hubs,
    config: OperatorConfig,
    require_ready: bool = True,
    check_sharing: bool = True,
) -> Plan:
    """Resolve the job; ResolveError says what stops it (and whether waiting may help).
    `check_sharing` False: a started job, whose sharing controller/model_access checks."""
    model = resolve_model(job, hubs, require_ready=require_ready, check_sharing=check_sharing)
    access = access_mode(model.source_hub.spec.storage)
    check_job(job, model)
    hp = resolve_hyperparameters(
        [job.spec.hyperparameters] + [d.hyperparameters for d in model.defaults]
    )
    compute = resolve_compute([job.spec.resources] + [d.resources for d in model.defaults], config)
    output_uri = output_of(job, config)
    secrets = {
        "model": secret_name(model.source_hub.spec.storage) if access == "secret" else None,
        "data": secret_name(job.spec.data),
        "output": secret_name(job.spec.output or config.default_output),
    }
    trainer_config = TrainerConfig.model_validate(
        {
            "job": {
                "name": job.metadata.name,
                "namespace": job.metadata.namespace or "default",
                "uid": uid,
            },
            "model": {"modelId": model.model_id, "source": model.source},
            "data": {name: getattr(job.spec.data, name) for name in DATA_CHANNELS},
            "hyperparameters": hp.model_dump(),
            "output": {"uri": output_uri},
            "trainer": trainer_parts(job),
        }
    )
    return Plan(
        job=job,
        model=model,
        hyperparameters=hp,
        compute=compute,
        output_uri=output_uri,
        secrets={k: v for k, v in secrets.items() if v},
        trainer_config=trainer_config,
        model_access=access,
    )


def trainer_parts(job: FineTuneJob) -> dict:
    """spec.trainer less the image and env: what the trainer's recipe runs with."""
    if job.spec.trainer is None:
        return {}
    return job.spec.trainer.model_dump(by_alias=True, exclude={"image", "env"}, exclude_none=True)


def output_of(job: FineTuneJob, config: OperatorConfig) -> str:
    if job.spec.output is not None:
        return job.spec.output.uri
    if config.default_output.uri is None:
        raise ResolveError(
            "NoOutput",
            "spec.output.uri is unset and the operator has no default output storage: set "
            "spec.output.uri (e.g. s3://bucket/prefix/)",
        )
    base = config.default_output.uri.rstrip("/")
    return f"{base}/{job.metadata.namespace or 'default'}/{job.metadata.name}/"


def secret_name(holder) -> str | None:
    ref = getattr(holder, "secret_ref", None) if holder is not None else None
    return ref.name if ref is not None else None
