"""The bundled trainer: reads a TrainerConfig, fine-tunes with LoRA on one or many ranks, and
writes checkpoints, progress and artifacts to S3-compatible storage (see train.py)."""
