"""Shared option helpers: the codec an audio query is encoded with."""

from songtrace.cli.options import query_codec


def test_query_codec_passes_a_real_models_own_codec_through_and_finds_a_codec_directory(tmp_path):
    assert query_codec(tmp_path, "diffusers:/models/sao") == "diffusers:/models/sao"
    assert query_codec(tmp_path, "sat:/models/mine") == "sat:/models/mine"
    assert query_codec(tmp_path, "demo") is None  # no codec there: latent and training-item queries still work
    (tmp_path / "codecs" / "demo").mkdir(parents=True)
    assert query_codec(tmp_path, "demo") == tmp_path / "codecs" / "demo"
