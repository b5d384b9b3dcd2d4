"""From a FineTuneJob to what runs: the hub model (references, sharing, EULA), the
hyperparameters (job > hub model > JumpStart) and the compute. Pure functions: the operator and
`kubetune run --local` feed them hubs from the API server or from YAML files alike."""
