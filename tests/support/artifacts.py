"""What tests of both model families check on a finished job's artifacts: the adapter applied
by peft to the hub's model folder alone, against merged/, and the files' modes."""

import stat
from pathlib import Path

import torch
from peft import PeftModel

from kubetune.api.v1alpha1.outputs import ADAPTER, MERGED
from kubetune_trainer.model import compute_dtype


def merge_tolerance() -> dict:
    """assert_close's tolerance for the adapter's logits against merged/'s. Trained in float32
    (CPU), merged/ is the same sum; in bfloat16 (a CUDA GPU), merged/'s weights were summed and
    rounded in bfloat16. (Not measured on a GPU yet.)"""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if compute_dtype(device) == torch.float32:
        return {"atol": 1e-4, "rtol": 1e-4}
    return {"atol": 0.25, "rtol": 0.05}


def logits_three_ways(out: Path, hub_model: Path, auto_class, inputs: dict) -> dict:
    """Logits on `inputs` of the hub's model folder alone ("base"), of it with out/adapter
    loaded by peft ("adapter"), and of out/merged ("merged"), all in float32."""
    base = auto_class.from_pretrained(hub_model, dtype=torch.float32).eval()
    with torch.no_grad():
        found = {"base": base(**inputs).logits}
        adapted = PeftModel.from_pretrained(base, out / ADAPTER).eval()
        found["adapter"] = adapted(**inputs).logits
        merged = auto_class.from_pretrained(out / MERGED, dtype=torch.float32).eval()
        found["merged"] = merged(**inputs).logits
    return found


def modes(folder: Path) -> dict[str, str]:
    """Every file and folder under folder (itself included, as "."), with its mode in octal."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return {p.relative_to(folder).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}
