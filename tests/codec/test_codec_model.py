"""The Codec module: shapes, frame arithmetic, determinism and locality of the latents."""

import torch

from songtrace.codec import Codec, CodecConfig

CONFIG = CodecConfig(hidden=16, latent_channels=4)


def make_codec() -> Codec:
    torch.manual_seed(0)
    return Codec(CONFIG).eval()


def test_shapes_follow_the_frame_arithmetic():
    codec = make_codec()
    spf = codec.samples_per_frame
    assert spf == 1536
    for n in (1, 1536, 1537, 5000):
        wav = torch.randn(2, n) * 0.1
        z = codec.encode(wav)
        assert z.shape == (2, 4, codec.frames_for(n))
        assert codec.decode_mel(z).shape == (2, 64, 4 * codec.frames_for(n))
    z = torch.randn(3, 4, 5)
    assert codec.decode(z, n_iter=2).shape == (3, 5 * spf)


def test_encode_is_deterministic_and_independent_of_batching():
    codec = make_codec()
    wav = torch.randn(3, 4 * 1536) * 0.1
    a, b = codec.encode(wav), codec.encode(wav)
    assert torch.equal(a, b)
    single = torch.cat([codec.encode(wav[i : i + 1]) for i in range(3)])
    assert torch.allclose(a, single, atol=1e-6)
    assert torch.equal(codec.decode(a, n_iter=3), codec.decode(a, n_iter=3))


def test_latents_are_local_appending_silence_keeps_early_frames():
    codec = make_codec()
    wav = torch.randn(1, 10 * 1536) * 0.1
    short = codec.encode(wav)
    long = codec.encode(torch.nn.functional.pad(wav, (0, 6 * 1536)))
    assert torch.allclose(short[..., :5], long[..., :5], atol=1e-5)  # receptive field: < 5 latent frames


def test_latent_scale_multiplies_encode_and_divides_decode():
    codec = make_codec()
    wav = torch.randn(1, 3 * 1536) * 0.1
    z1 = codec.encode(wav)
    m1 = codec.decode_mel(z1)
    codec.latent_scale.fill_(2.5)
    z2 = codec.encode(wav)
    assert torch.allclose(z2, 2.5 * z1)
    assert torch.allclose(codec.decode_mel(z2), m1, atol=1e-5)
