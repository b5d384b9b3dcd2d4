"""The kopf operator: handlers decode, delegate to resolve/render/status, and return."""
