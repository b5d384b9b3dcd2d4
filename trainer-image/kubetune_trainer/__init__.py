"""The bundled trainer (lands with the trainer issue): reads a TrainerConfig, trains LoRA."""
