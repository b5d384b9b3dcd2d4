"""Status rebuilt from the state of the world on every reconcile (never read back and
incremented): pure functions of what the operator observed."""
