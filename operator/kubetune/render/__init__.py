"""Children of a FineTuneJob as plain dicts: pure functions of the resolved Plan and the
operator config (no client, clock or randomness), so tests compare dicts and YAML."""
