"""songtrace.codec: audio <-> continuous latents (a small KL-regularised mel autoencoder + Griffin-Lim).

codec = load_codec("songtrace-data/codecs/demo")
z = encode_audio(codec, wav, sr)           # [C, F], F = ceil(samples / codec.samples_per_frame)
wav = decode_to_wav(codec, z)               # float32 at codec.sample_rate
"""

from songtrace.codec.config import CodecConfig, EncodeConfig
from songtrace.codec.encode import decode_to_wav, encode_audio, encode_world, latent_length
from songtrace.codec.io import MODEL_FILE, load_codec
from songtrace.codec.model import Codec
from songtrace.codec.train import METRICS_FILE, reconstruction_metrics, train_codec

__all__ = [
    "METRICS_FILE",
    "MODEL_FILE",
    "Codec",
    "CodecConfig",
    "EncodeConfig",
    "decode_to_wav",
    "encode_audio",
    "encode_world",
    "latent_length",
    "load_codec",
    "reconstruction_metrics",
    "train_codec",
]
