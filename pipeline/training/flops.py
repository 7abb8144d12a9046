"""Training FLOPs of the recurrent models, counted from their shapes (multiply-add = 2 FLOPs).

A recurrent layer with G gates (LSTM 4, GRU 3), input size I and hidden size H does two
matrix products per step and direction, x_t @ W_ih (I x GH) and h_t-1 @ W_hh (H x GH):
2·G·H·(I + H) FLOPs forward. Backward does the same products again for the weight
gradients, once more for the gradient of h (none into the zero initial state), and once
more for the gradient of the input when the input needs one (not for raw data). Dense
layers count the same way. Element-wise gate arithmetic and pooling are left out: they are
O(G·H) per step against O(G·H·(I + H)).

These counts match torch.utils.flop_counter.FlopCounterMode on the decomposed CPU kernels
exactly (tests/test_benchmarks.py), so "FLOP/s" means the same thing as PyTorch's counter.
"""

from __future__ import annotations

GATES = {"lstm": 4, "gru": 3, "lstm_peephole": 4}  # peepholes add O(H) per step: left out


def linear_train_flops(inputs: int, outputs: int, rows: int, input_needs_grad: bool) -> int:
    forward = 2 * inputs * outputs * rows
    return forward + forward + (forward if input_needs_grad else 0)


def recurrent_train_flops(cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
                          batch: int, steps: int, input_needs_grad: bool) -> int:
    """Forward plus backward FLOPs of a (bidirectional) stack over [batch, steps, input_size]."""
    gates, directions = GATES[cell], 2 if bidirectional else 1
    width = gates * hidden_size
    total, size, needs_grad = 0, input_size, input_needs_grad
    for _ in range(num_layers):
        forward = 2 * width * (size + hidden_size) * batch * steps
        hidden_grad = 2 * width * hidden_size * batch * (steps - 1)
        input_grad = 2 * width * size * batch * steps if needs_grad else 0
        total += directions * (forward + forward + hidden_grad + input_grad)
        size, needs_grad = hidden_size * directions, True
    return total


def classifier_train_flops(args: dict, batch: int, steps: int) -> int:
    """One training step of a SequenceClassifier on a [batch, steps] token batch."""
    directions = 2 if args["bidirectional"] else 1
    rnn = recurrent_train_flops(args["cell"], args["embedding_dim"], args["hidden_size"], args["num_layers"],
                                args["bidirectional"], batch, steps, input_needs_grad=True)  # embeddings train
    head = linear_train_flops(args["hidden_size"] * directions * len(args["pooling"]), args["num_classes"], batch,
                              input_needs_grad=True)
    return rnn + head


def forecaster_train_flops(args: dict, batch: int, lookback: int) -> int:
    """One training step of a Forecaster on a [batch, lookback, channels] batch."""
    width = 1 if args["channel_independent"] else args["n_channels"]
    series = batch * (args["n_channels"] if args["channel_independent"] else 1)
    segment = args["segment_len"] or 1
    steps = lookback // segment
    hidden = args["hidden_size"]
    embed = linear_train_flops(width * segment, hidden, series * steps, input_needs_grad=False) \
        if args["segment_len"] else 0
    rnn = recurrent_train_flops(args["cell"], hidden if args["segment_len"] else width, hidden, args["num_layers"],
                                False, series, steps, input_needs_grad=bool(args["segment_len"]))
    if args.get("decoder", "linear") == "pmf":
        head = pmf_train_flops(args, series, width)
    else:
        head = linear_train_flops(hidden, args["horizon"] * width, series, input_needs_grad=True)
    return embed + rnn + head


def pmf_train_flops(args: dict, series: int, width: int) -> int:
    """PMF decoding (pipeline/nets/forecaster.py step_per_query): per layer, the state's share of the
    gates once per series and the queries' once per query (the first layer's queries are the
    position and channel embeddings; a deeper layer's are the layer below's outputs, one per
    series and segment), then each segment's values."""
    segment, hidden = args["segment_len"], args["hidden_size"]
    segments = args["horizon"] // segment
    gates = GATES[args["cell"]] * hidden
    total = 0
    for depth in range(args["num_layers"]):
        queries = segments * (args["n_channels"] if args["channel_independent"] else 1) if depth == 0 \
            else series * segments
        total += linear_train_flops(hidden, gates, queries, True) + linear_train_flops(hidden, gates, series, True)
    return total + linear_train_flops(hidden, segment * width, series * segments, input_needs_grad=True)


def matmul_flops(n: int) -> int:
    """An n x n by n x n matrix product."""
    return 2 * n ** 3
