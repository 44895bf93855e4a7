"""The batch-1 streaming engine (`amnet.amortized.streaming`)."""

import numpy as np

from amnet.amortized import streaming
from amnet.amortized.costs import frame_costs
from amnet.rnnt import decoding
from amnet.rnnt.transducer import Transducer
from tests.amortized.models import amnet_batch, amnet_model, amnet_params


def test_streaming_engine_matches_whole_utterance_decoding():
    model = amnet_model()
    batch = amnet_batch(1, frames=25)
    params = amnet_params(model, batch)
    features = np.asarray(batch[0][0])
    result = streaming.StreamingRecognizer(model, params, max_length=40).run(features)
    tokens, lengths = decoding.greedy_decode(model, params, batch[0], batch[1], max_length=40)
    assert result.tokens == np.asarray(tokens[0, :lengths[0]]).tolist()
    trace = model.apply({"params": params}, *batch[:2], method=Transducer.route)
    np.testing.assert_array_equal(result.branches, np.asarray(trace.gates[0].argmax(-1)))
    assert result.frame_seconds.shape == (25,) and np.all(result.frame_seconds > 0)
    costs = np.asarray(frame_costs(model.config).per_branch)
    np.testing.assert_array_equal(result.frame_flops, costs[result.branches])
