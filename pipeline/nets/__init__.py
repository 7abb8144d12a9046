"""The networks (torch modules): the recurrent backbone, the peephole LSTM, and each kind's
model on top of it. The kinds' training side (pipeline/kinds/) builds them."""
