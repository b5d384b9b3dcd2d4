"""The kubetune API: pydantic types (the single source), CRD generation, manifest loading."""
