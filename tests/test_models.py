"""Models: masking makes padding harmless; the forecaster's options keep their promises."""

from __future__ import annotations

import pytest
import torch

from pipeline.kinds.registry import build_model
from pipeline.nets.backbone import reverse_valid
from pipeline.nets.classifier import SequenceClassifier
from pipeline.nets.forecaster import Forecaster


def test_reverse_valid_reverses_within_each_length_and_leaves_padding():
    x = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]]).unsqueeze(-1)
    out = reverse_valid(x, torch.tensor([3, 5])).squeeze(-1)
    assert out.tolist() == [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4]]


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm_peephole"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("pooling", [["last"], ["mean"], ["max"], ["last", "mean", "max"]])
def test_adding_padding_never_changes_a_prediction(cell, bidirectional, pooling):
    torch.manual_seed(0)
    model = SequenceClassifier(vocab_size=50, num_classes=2, cell=cell, embedding_dim=8, hidden_size=6,
                               num_layers=2, bidirectional=bidirectional, dropout=0.0,
                               embedding_dropout=0.0, pooling=pooling).eval()
    ids = torch.randint(2, 50, (4, 9))
    ids[1, 6:] = 0
    ids[2, 2:] = 0
    with torch.no_grad():
        plain = model(ids)
        padded = model(torch.cat([ids, torch.zeros(4, 7, dtype=torch.long)], dim=1))
        alone = model(ids[2:3, :2])  # the same row with no padding at all
    assert torch.allclose(plain, padded, atol=1e-6)
    assert torch.allclose(plain[2:3], alone, atol=1e-6)


def test_the_backward_direction_does_see_the_whole_row():
    # Guard against a "fix" that simply ignores the backward pass: changing the first token
    # must change the last-state pooling of a bidirectional model.
    torch.manual_seed(0)
    model = SequenceClassifier(50, 2, "gru", 8, 6, 1, True, 0.0, 0.0, ["last"]).eval()
    ids = torch.randint(2, 50, (1, 6))
    changed = ids.clone()
    changed[0, 0] = 1 + (ids[0, 0] % 48) + 1
    with torch.no_grad():
        assert not torch.allclose(model(ids), model(changed))


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm_peephole"])
@pytest.mark.parametrize("segment_len, independent", [(0, False), (0, True), (8, False), (8, True)])
def test_forecaster_outputs_every_horizon_step_at_once(cell, segment_len, independent):
    model = Forecaster(n_channels=3, horizon=5, cell=cell, hidden_size=8, num_layers=2, dropout=0.0,
                       revin=True, segment_len=segment_len, channel_independent=independent).eval()
    assert model(torch.randn(4, 16, 3)).shape == (4, 5, 3)


def test_revin_makes_forecasts_follow_the_scale_and_offset_of_the_window():
    torch.manual_seed(0)
    model = Forecaster(2, 4, "gru", 8, 1, 0.0, revin=True, segment_len=4, channel_independent=True).eval()
    past = torch.randn(3, 12, 2)
    with torch.no_grad():
        assert torch.allclose(model(past * 10 + 5), model(past) * 10 + 5, atol=1e-3)
    plain = Forecaster(2, 4, "gru", 8, 1, 0.0, revin=False, segment_len=4, channel_independent=True).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(past * 10 + 5), plain(past) * 10 + 5, atol=1e-3)


def test_channel_independent_forecaster_treats_channels_alike():
    model = Forecaster(3, 4, "lstm", 8, 1, 0.0, revin=False, segment_len=0, channel_independent=True).eval()
    past = torch.randn(2, 8, 3)
    with torch.no_grad():
        out = model(past)
        swapped = model(past[..., [2, 1, 0]])
    assert torch.allclose(out[..., [2, 1, 0]], swapped, atol=1e-6)


def test_build_model_rebuilds_from_plain_arguments():
    args = dict(n_channels=2, horizon=3, cell="gru", hidden_size=4, num_layers=1, dropout=0.0,
                revin=False, segment_len=0, channel_independent=False)
    torch.manual_seed(0)
    built = build_model("forecaster", args)
    torch.manual_seed(0)
    direct = Forecaster(**args)
    assert type(built) is Forecaster
    assert built.state_dict().keys() == direct.state_dict().keys()   # the same shapes, from the same arguments
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values()))
    assert built.eval()(torch.randn(5, 6, 2)).shape == (5, 3, 2)


# ---- PMF decoding (SegRNN's parallel multi-step forecasting) ------------------------------------


def pmf_forecaster(cell: str, layers: int, independent: bool) -> Forecaster:
    torch.manual_seed(0)
    model = Forecaster(3, 12, cell, 8, layers, 0.0, revin=True, segment_len=4, channel_independent=independent,
                       decoder="pmf").eval()
    with torch.no_grad():   # peepholes start at zero, where the cell is a plain LSTM: make them count
        for name, weight in model.named_parameters():
            if "weight_ch" in name:
                weight.normal_()
    return model


def decode_by_repeating_states(model: Forecaster, finals: list, batch: int) -> torch.Tensor:
    """PMF as SegRNN writes it: each row's last state repeated once per output segment, and the
    cells run one step over every (row, segment) with the position (and channel) embedding in."""
    segments, hidden = model.position_embedding.shape
    queries = model.position_embedding
    if model.channel_embedding is not None:
        queries = torch.cat([queries.unsqueeze(0).expand(model.n_channels, -1, -1),
                             model.channel_embedding.unsqueeze(1).expand(-1, segments, -1)], -1)
    hidden = queries.shape[-1]
    rows = batch * (model.n_channels if model.channel_embedding is not None else 1)
    queries = queries.reshape(1, -1, hidden).expand(batch, -1, -1).reshape(rows * segments, 1, hidden)

    def repeated(state):
        return state.unsqueeze(2).expand(-1, -1, segments, -1).reshape(1, rows * segments, hidden)

    states = [tuple(map(repeated, s)) if isinstance(s, tuple) else repeated(s) for s in finals]
    out, _ = model.backbone.run(queries, states)
    return out.reshape(*([batch, model.n_channels] if model.channel_embedding is not None else [batch]), segments, -1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm_peephole"])
@pytest.mark.parametrize("layers, independent", [(1, True), (2, True), (2, False)])
def test_pmf_decodes_every_segment_from_its_rows_last_state_as_repeating_that_state_would(cell, layers, independent):
    model = pmf_forecaster(cell, layers, independent)
    past = torch.randn(5, 16, 3)
    x = past.permute(0, 2, 1).reshape(15, 16, 1) if independent else past
    with torch.no_grad():
        _, finals = model.backbone.run(model.embed(x.reshape(x.shape[0], 4, -1)))
        ours, theirs = model.decode(finals, 5), decode_by_repeating_states(model, finals, 5)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_pmf_forecast_of_one_window_does_not_depend_on_the_rest_of_the_batch(cell):
    model = pmf_forecaster(cell, 1, True)
    past = torch.randn(4, 16, 3)
    with torch.no_grad():
        assert model(past).shape == (4, 12, 3)
        assert torch.allclose(model(past)[2:3], model(past[2:3]), atol=1e-6)


def test_pmf_needs_segments_that_divide_the_horizon():
    with pytest.raises(ValueError, match="segment_len=5, horizon=12"):
        Forecaster(3, 12, "gru", 8, 1, 0.0, True, 5, True, decoder="pmf")
    with pytest.raises(ValueError, match="decoder must be one of"):
        Forecaster(3, 12, "gru", 8, 1, 0.0, True, 4, True, decoder="attention")


@pytest.mark.parametrize("cell", ["lstm", "gru", "lstm_peephole"])
@pytest.mark.parametrize("decoder", ["linear", "pmf"])
def test_the_unrolled_encoder_computes_what_the_recurrent_layers_compute(cell, decoder):
    model = pmf_forecaster(cell, 2, True) if decoder == "pmf" else \
        Forecaster(3, 12, cell, 8, 2, 0.0, True, 4, True).eval()
    past = torch.randn(3, 16, 3)
    with torch.no_grad():
        assert torch.allclose(model(past, unrolled=True), model(past), atol=1e-6)
