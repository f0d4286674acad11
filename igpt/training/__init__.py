"""The one training loop every task plugs into (GPT pretraining and fine-tuning, VQ tokenizer
fitting, and the stages to come), with what every run shares: its directory, checkpoints,
metrics, progress, optimizers, cadence and preemption.

Importing this package imports no jax: `rundir` and `metrics` serve the report too.
"""
