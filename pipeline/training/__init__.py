"""The torch side of training: loaders over a data kind's datasets, one epoch of training,
resume state, devices and DDP, the checkpoint format, FLOP counts and the train stage's figures."""
