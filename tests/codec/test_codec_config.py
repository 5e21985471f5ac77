"""CodecConfig: validation, JSON round trip and frame arithmetic."""

import pytest

from songtrace.codec import CodecConfig, EncodeConfig
from songtrace.errors import SongtraceError


def test_round_trip_and_hash():
    c = CodecConfig(hidden=32, fmax=7000.0, steps=10)
    back = CodecConfig.from_dict(c.to_dict())
    assert back == c and back.config_hash() == c.config_hash() != CodecConfig().config_hash()
    assert EncodeConfig.from_dict(EncodeConfig(batch_size=3).to_dict()) == EncodeConfig(batch_size=3)


def test_frame_arithmetic_of_the_defaults():
    c = CodecConfig()
    assert c.samples_per_frame == 1536
    assert c.seconds_per_frame == pytest.approx(0.096)
    assert c.frames_for(12 * 16000) == 125
    assert c.frames_for(1) == 1 and c.frames_for(1536) == 1 and c.frames_for(1537) == 2
    assert c.segment_frames == int(c.segment_seconds * 16000) // 1536


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"downsample": 3}, "downsample"),
        ({"hop_length": 1024}, "hop_length"),
        ({"hop_length": 383}, "hop_length"),
        ({"n_mels": 1000}, "n_mels"),
        ({"steps": 0}, "steps"),
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"fmax": 9000.0}, "fmax"),
        ({"segment_seconds": 0.05}, "segment_seconds"),
    ],
)
def test_invalid_values_are_refused(kwargs, field):
    with pytest.raises(SongtraceError, match=field):
        CodecConfig(**kwargs)
    with pytest.raises(SongtraceError, match="batch_size"):
        EncodeConfig(batch_size=0)
