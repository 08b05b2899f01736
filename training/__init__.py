"""LoRA fine-tuning from snapshots, evaluation and pool scoring.

Nothing heavy is imported here: `import training` does not load torch. Use the submodules:
`training.config.TrainConfig`, `training.train.train`, `training.score.score`, `training.metrics`.
"""
