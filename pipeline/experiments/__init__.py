"""Commands that run the stages as a grid of DVC experiments (`dvc exp run --queue`), beside
the default pipeline: `python -m pipeline.experiments.ltsf <task>`, the long-horizon table."""
