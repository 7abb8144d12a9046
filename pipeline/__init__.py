"""Recurrent baselines (LSTM, GRU) for IMDB and ETTh1: DVC stages, Hydra config, MLflow, ONNX."""
