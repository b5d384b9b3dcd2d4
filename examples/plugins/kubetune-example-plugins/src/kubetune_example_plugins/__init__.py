"""Example kubetune trainer plug-ins, registered through entry points (see pyproject.toml):
the `qa-csv` data format (qa_csv.py) and the `stop-at-loss` callback (stop_at_loss.py).

Modules here define their part and do not add it to a registry themselves: the trainer adds
what an entry point names when it first looks a part up.
"""
