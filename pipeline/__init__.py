"""Recurrent baselines (LSTM, GRU, peephole LSTM) for IMDB, ETTh1 (or any CSV series) and Tiny Shakespeare:
DVC stages, Hydra config, MLflow, ONNX."""
