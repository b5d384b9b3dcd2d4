"""Local mode: a FineTuneJob resolved from YAML files by the operator's own code, trained by the
trainer on this machine (`kubetune run --local`), and what its output folder says."""
