"""The message of a missing package names it, the extra that brings it and the pip command."""

from songtrace.errors import SongtraceError, missing_package


def test_missing_package_messages():
    e = missing_package("transformers.models", "the clap embedder")
    assert isinstance(e, SongtraceError)
    assert str(e) == "the clap embedder needs the transformers package (pip install 'songtrace[real]', or pip install 'transformers>=4.40')"
    assert str(missing_package("librosa", "dsp")) == "dsp needs the librosa package (pip install 'librosa')"
    assert str(missing_package("openl3", "openl3", "it needs TensorFlow")).endswith("pip install 'openl3'); it needs TensorFlow")
