"""Kubernetes conditions: set by type, lastTransitionTime kept while the status holds."""


def condition(
    type_: str, status: bool | None, reason: str, message: str = "", generation: int | None = None
) -> dict:
    value = "Unknown" if status is None else ("True" if status else "False")
    found = {"type": type_, "status": value, "reason": reason, "message": message}
    if generation is not None:
        found["observedGeneration"] = generation
    return found


def merge(previous: list[dict] | None, current: list[dict], now: str) -> list[dict]:
    """`current` with lastTransitionTime from `previous` where the status did not change;
    conditions of types not in `current` are dropped (the world no longer says them)."""
    before = {c.get("type"): c for c in previous or []}
    merged = []
    for cond in current:
        old = before.get(cond["type"])
        same = old is not None and old.get("status") == cond["status"]
        since = old.get("lastTransitionTime") if same else None
        merged.append({**cond, "lastTransitionTime": since or now})
    return merged


def find(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
