"""`kubetune crds` and `kubetune schema`: generated artifacts of the API types."""

import json
from pathlib import Path

from kubetune.api.crds import all_crds, file_name, to_yaml
from kubetune.api.v1alpha1 import TrainerConfig


def register(commands) -> None:
    crds = commands.add_parser(
        "crds",
        help="print (or write) the CustomResourceDefinitions",
        description="Print the kubetune CRDs, generated from the API types, as YAML "
        "(pipe to `kubectl apply -f -`), or write one file per CRD into a folder.",
    )
    crds.add_argument("--write", metavar="DIR", type=Path, help="write <group>_<plural>.yaml files")
    crds.set_defaults(run=run_crds)

    schema = commands.add_parser(
        "schema",
        help="print a JSON schema of a kubetune contract",
        description="Print the JSON schema of the TrainerConfig that trainer images read.",
    )
    schema.add_argument("name", choices=["trainer-config"])
    schema.set_defaults(run=run_schema)


def run_crds(args) -> int:
    generated = all_crds()
    if args.write is None:
        print("---\n".join(to_yaml(crd) for crd in generated), end="")
        return 0
    args.write.mkdir(parents=True, exist_ok=True)
    for crd in generated:
        (args.write / file_name(crd)).write_text(to_yaml(crd))
        print(f"wrote {args.write / file_name(crd)}")
    return 0


def run_schema(args) -> int:
    print(json.dumps(trainer_config_schema(), indent=2))
    return 0


def trainer_config_schema() -> dict:
    return TrainerConfig.model_json_schema(by_alias=True, mode="validation")
