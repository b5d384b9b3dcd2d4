"""The chart ships the generated CRDs unchanged (Helm installs charts/kubetune/crds/ first),
plus kopf's peering CRDs that the operator's peering needs."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "crds"
CHART_CRDS = REPO / "charts" / "kubetune" / "crds"
KOPF_PEERINGS = "kopf.dev_peerings.yaml"


@pytest.mark.parametrize("name", sorted(p.name for p in GENERATED.glob("*.yaml")))
def test_chart_crds_are_the_generated_ones_byte_for_byte(name):
    copy = CHART_CRDS / name
    assert copy.exists(), f"{copy} is missing: run `make crds`"
    assert copy.read_bytes() == (GENERATED / name).read_bytes(), (
        f"{copy} differs from crds/{name}: run `make crds`"
    )


def test_chart_has_no_other_crds():
    extra = {p.name for p in CHART_CRDS.iterdir()} - {p.name for p in GENERATED.glob("*.yaml")}
    assert extra == {KOPF_PEERINGS}, f"not generated, not kopf's: {extra - {KOPF_PEERINGS}}"


def test_kopf_peering_crds():
    crds = list(yaml.safe_load_all((CHART_CRDS / KOPF_PEERINGS).read_text()))
    scopes = {c["metadata"]["name"]: c["spec"]["scope"] for c in crds}
    assert scopes == {
        "clusterkopfpeerings.kopf.dev": "Cluster",
        "kopfpeerings.kopf.dev": "Namespaced",
    }
    for crd in crds:
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        # kopf keeps each peer's keep-alive under .status, in the main resource (no subresource).
        assert "subresources" not in version
        assert version["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"]
