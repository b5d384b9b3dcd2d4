"""What serves a finished job's model in a cluster: `artifacts` reads what the job left under its
output URI and decides what to serve from where (a `Serving`), `kserve` and `vllm` render it,
purely, as a KServe InferenceService or a plain vLLM Deployment and Service."""
