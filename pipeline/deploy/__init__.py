"""The deployment path, torch-free: onnxruntime, numpy and a kind's request reader only.
`python -m pipeline.deploy.predict` on the command line, `serving.py` for `mlflow models serve`,
`limits.py` for the errors and request limits both share, `sessions.py` for onnxruntime."""
