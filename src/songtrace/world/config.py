"""Stage configs of the world: the built demo world (`WorldConfig`) and an imported folder (`ImportConfig`)."""

from __future__ import annotations

import dataclasses

from songtrace.artifacts import StageConfig, check_choice, check_positive
from songtrace.errors import SongtraceError

UNLISTED_POLICIES = ("error", "skip")


def _check_fraction(name: str, value: float, upper: float = 1.0) -> None:
    """Raise a clear error when a fraction is outside [0, upper)."""
    if not 0.0 <= value < upper:
        raise SongtraceError(f"{name} must be in [0, {upper}), got {value}")


def _check_rate(sample_rate: int) -> None:
    """Sample rates are whole numbers of Hz in a range the synthesiser and codecs handle."""
    if not isinstance(sample_rate, int) or not 4000 <= sample_rate <= 96000:
        raise SongtraceError(f"sample_rate must be an integer between 4000 and 96000 Hz, got {sample_rate!r}")


@dataclasses.dataclass(frozen=True)
class WorldConfig(StageConfig):
    """The demo world: how many tracks, their length range, the rate, the split and the planted versions.

    Durations are drawn per track: `short_fraction` of tracks get a length between `min_seconds` and
    a third of `max_seconds` (zero padding matters for them, as in the paper), `full_fraction` are cut
    at `max_seconds`, the rest lie in between. `version_fraction` of tracks are planted versions.
    """

    tracks: int = 400
    seed: int = 0
    max_seconds: float = 12.0
    min_seconds: float = 1.5
    sample_rate: int = 16000
    valid_fraction: float = 0.1
    version_fraction: float = 0.05
    short_fraction: float = 0.3
    full_fraction: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.tracks, int) or self.tracks < 2:
            raise SongtraceError(f"tracks must be an integer >= 2, got {self.tracks!r}")
        check_positive("min_seconds", self.min_seconds)
        check_positive("max_seconds", self.max_seconds)
        if self.min_seconds > self.max_seconds:
            raise SongtraceError(f"min_seconds ({self.min_seconds}) must not exceed max_seconds ({self.max_seconds})")
        if self.max_seconds > 600:
            raise SongtraceError(f"max_seconds must be <= 600, got {self.max_seconds}")
        _check_rate(self.sample_rate)
        _check_fraction("valid_fraction", self.valid_fraction, 0.5)
        _check_fraction("version_fraction", self.version_fraction, 0.5)
        _check_fraction("short_fraction", self.short_fraction)
        _check_fraction("full_fraction", self.full_fraction)
        if self.short_fraction + self.full_fraction > 1.0:
            raise SongtraceError(f"short_fraction + full_fraction must be <= 1, got {self.short_fraction + self.full_fraction}")


@dataclasses.dataclass(frozen=True)
class ImportConfig(StageConfig):
    """A user's folder of audio with a captions CSV, resampled to `sample_rate` mono and cropped to `max_seconds`.

    `unlisted` says what happens to audio files in the folder that no CSV row names: "error" (the
    default, so that nothing is left out of a training set silently) or "skip" (they are listed in
    config.json under `skipped_files`).
    """

    sample_rate: int = 16000
    max_seconds: float = 12.0
    valid_fraction: float = 0.1
    seed: int = 0
    unlisted: str = "error"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rate(self.sample_rate)
        check_positive("max_seconds", self.max_seconds)
        _check_fraction("valid_fraction", self.valid_fraction, 0.5)
        check_choice("unlisted policy", self.unlisted, UNLISTED_POLICIES)
