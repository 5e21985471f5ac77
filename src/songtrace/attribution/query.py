"""The query ẑ to attribute: a training item, a generated latent, an audio file, or a prompt to generate from.

Query specs (a registry; an unknown form raises an error listing them):

- `train:ID`                a training (or validation) item of the latent cache (Train-to-Train)
- `PATH.latent.safetensors` a latent written by `songtrace generate` (keys latents [1, C, L] or
                            latent [C, F], n_frames, text, text_mask, seconds_total, seconds_start;
                            a bare latent without seconds_total lasts its frames at the data's frame rate)
- `PATH.wav` / `.flac` / `.ogg` an audio file, encoded with the codec (cropped to the model length);
                            caption from `caption` (or the null caption); with an imported model's
                            own VAE and T5 (`diffusers:DIR`, `sat:DIR`) exactly as `songtrace encode`
                            encodes its training tracks, so a generation of that model is a query
- `prompt:TEXT@SEED`        generate a track for TEXT with SEED (`songtrace.model.generate`, the
                            model's full length unless `seconds` is given), then attribute it

Every query resolves to a one-item `Batch` zero-padded to the model length, like a training item,
and is checked (`data.batch.check_batch`: shapes, token width, 1 <= n_frames <= length, no NaN/inf,
seconds_total > 0) before any work.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from songtrace.artifacts import sha256_file
from songtrace.data.batch import Batch, check_batch
from songtrace.data.latent_file import LATENT_SUFFIX, read_latent_file
from songtrace.data.latents import LatentSet, frame_rate
from songtrace.errors import SongtraceError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclasses.dataclass
class Query:
    """A resolved query: its id (used to seed its noise plan), kind, one-item batch and provenance."""

    query_id: str
    kind: str
    batch: Batch
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    generated: Any = None  # the GeneratedTrack of a prompt query (saved beside the scores)


@dataclasses.dataclass
class QueryContext:
    """What resolving a query may need: the data (shapes, training items), the model, the codec, a caption.

    `model` / `codec` are the already loaded objects when the caller has them (a prompt or audio
    query then reuses them); otherwise they are loaded from the directories once, on first use.
    """

    latents: LatentSet
    model_dir: Path | None = None
    codec_dir: Path | None = None
    caption: str | None = None
    seconds: float | None = None
    generate_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: Any = None
    codec: Any = None

    def loaded_model(self) -> Any:
        """The model's task (loaded from `model_dir` once if not given)."""
        if self.model is None:
            if self.model_dir is None:
                raise SongtraceError("a prompt query needs the model to generate with (pass --model)")
            from songtrace.model.registry import load_task

            self.model = load_task(self.model_dir)
        return self.model

    def loaded_codec(self) -> Any:
        """The codec (loaded from `codec_dir` once if not given)."""
        if self.codec is None:
            if self.codec_dir is None:
                raise SongtraceError("this query needs the codec that made the latents (pass --codec)")
            from songtrace.codec import load_codec
            from songtrace.codec.external import is_external, load_external_codec

            spec = str(self.codec_dir)
            self.codec = load_external_codec(spec) if is_external(spec) else load_codec(self.codec_dir)
        return self.codec


@dataclasses.dataclass(frozen=True)
class QueryKind:
    """One form of query spec: how to recognise it and how to resolve it."""

    form: str
    matches: Callable[[str], bool]
    resolve: Callable[[str, QueryContext], Query]


# --------------------------------------------------------------------------- helpers


def _model_length(ctx: QueryContext) -> int:
    return int(ctx.latents.latent_shape[1])


def pad_latent(latent: torch.Tensor, length: int, source: str) -> tuple[torch.Tensor, int]:
    """Zero-pad a latent `[C, F]` to the model length; returns (latent [C, length], real frames)."""
    if latent.dim() == 3 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.dim() != 2:
        raise SongtraceError(f"{source}: expected a latent [C, F], got shape {tuple(latent.shape)}")
    frames = int(latent.shape[1])
    if frames < 1:
        raise SongtraceError(f"{source}: the latent has no frames")
    if frames > length:
        raise SongtraceError(f"{source}: the latent has {frames} frames, longer than the model's {length}; crop the audio first")
    out = torch.zeros(latent.shape[0], length, dtype=torch.float32)
    out[:, :frames] = latent.float()
    return out, frames


def fit_text(text: torch.Tensor, mask: torch.Tensor, tokens: int, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption tokens `[S, D]` and mask `[S]` padded/cropped to the cache's S tokens."""
    if text.dim() == 3:
        text, mask = text[0], mask[0]
    if text.dim() != 2 or mask.shape != text.shape[:1]:
        raise SongtraceError(f"{source}: caption tokens must be [S, D] with a mask [S], got {tuple(text.shape)} and {tuple(mask.shape)}")
    out = torch.zeros(tokens, text.shape[-1])
    out_mask = torch.zeros(tokens, dtype=torch.bool)
    n = min(tokens, text.shape[0])
    out[:n], out_mask[:n] = text[:n].float(), mask[:n].bool()
    return out, out_mask


def caption_tokens(caption: str | None, ctx: QueryContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings of a caption (MiniLM), or the null caption (zeros, all masked) when there is none."""
    tokens, dim = int(ctx.latents.text.shape[1]), int(ctx.latents.text.shape[2])
    if not caption:
        return torch.zeros(tokens, dim), torch.zeros(tokens, dtype=torch.bool)
    from songtrace.codec.text import encode_tokens

    text, mask = encode_tokens([caption], max_tokens=tokens)
    if text.shape[-1] != dim:
        raise SongtraceError(f"the caption encoder gives {text.shape[-1]}-d tokens but the data has {dim}-d tokens")
    return text[0], mask[0]


def make_query(
    query_id: str,
    kind: str,
    latent: torch.Tensor,
    n_frames: int,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    seconds_start: float,
    seconds_total: float,
    **meta: Any,
) -> Query:
    """A one-item query batch from its parts."""
    batch = Batch.single(query_id, latent, n_frames, text, text_mask, seconds_start, seconds_total)
    return Query(query_id=query_id, kind=kind, batch=batch, source=str(meta.pop("source", "")), meta=meta)


# --------------------------------------------------------------------------- kinds


def _resolve_train(spec: str, ctx: QueryContext) -> Query:
    item_id = spec[len("train:") :]
    row = ctx.latents.index_of(item_id)
    batch = ctx.latents.batch([row])
    batch.ids = [spec]
    return Query(spec, "train", batch, source=item_id, meta={"train_id": item_id, "artist": ctx.latents.artists[row]})


def _resolve_latent(spec: str, ctx: QueryContext) -> Query:
    path = Path(spec)
    saved = read_latent_file(path)
    latent, frames = pad_latent(saved.latent, _model_length(ctx), str(path))
    frames = min(frames, saved.n_frames)
    tokens = int(ctx.latents.text.shape[1])
    if saved.text is not None and saved.text_mask is not None and ctx.caption is None:
        text, mask = fit_text(saved.text, saved.text_mask, tokens, str(path))
    else:
        text, mask = caption_tokens(ctx.caption, ctx)
    if saved.seconds_total is not None:
        seconds_total, seconds_from = saved.seconds_total, "file"
    else:  # a bare latent: its real frames at the frame rate of the training data (encoded by the same codec)
        if not bool((ctx.latents.seconds_total > 0).any()):
            raise SongtraceError(f"{path}: no seconds_total, and the latent cache records no durations to take a frame rate from")
        seconds_total, seconds_from = frames / frame_rate(ctx.latents.seconds_total, ctx.latents.n_frames), "frames"
    return make_query(saved.id, "latent", latent, frames, text, mask, saved.seconds_start, seconds_total, source=str(path),
                      file_sha256=sha256_file(path), seconds=float(seconds_total), seconds_from=seconds_from)


def _resolve_audio(spec: str, ctx: QueryContext) -> Query:
    path = Path(spec)
    if not path.exists():
        raise SongtraceError(f"{path}: audio file not found")
    if ctx.codec_dir is None and ctx.codec is None:
        raise SongtraceError(f"{path}: attributing an audio file needs the codec that made the latents (pass --codec)")
    from songtrace.codec import encode_audio
    from songtrace.data.audio import read_audio, resample, to_mono

    codec = ctx.loaded_codec()
    length = _model_length(ctx)
    wav, sr = read_audio(path, max_seconds=length * codec.samples_per_frame / codec.sample_rate + 1.0)
    meta = {"source": str(path), "caption": ctx.caption or "", "file_sha256": sha256_file(path)}
    from songtrace.codec.external import ExternalCodec

    if isinstance(codec, ExternalCodec):
        return _external_audio_query(path, wav, int(sr), codec, ctx, meta)
    mono = resample(to_mono(wav, str(path)), int(sr), codec.sample_rate)
    if len(mono) < codec.samples_per_frame:
        raise SongtraceError(f"{path}: {len(mono) / codec.sample_rate:.4f} s of audio is shorter than one latent frame "
                             f"({codec.samples_per_frame / codec.sample_rate:.3f} s)")
    frames = min(codec.frames_for(len(mono)), length)
    # encoded padded to the model length, exactly as `songtrace encode` encodes training tracks
    latent = encode_audio(codec, mono, codec.sample_rate, n_frames_total=length)
    text, mask = caption_tokens(ctx.caption, ctx)
    seconds = float(len(mono) / codec.sample_rate)
    cropped = frames < codec.frames_for(len(mono))
    return make_query(path.stem, "audio", latent, frames, text, mask, 0.0, seconds, **meta, cropped=cropped)


def _external_audio_query(path: Path, wav: Any, sr: int, codec: Any, ctx: QueryContext, meta: dict[str, Any]) -> Query:
    """An audio query of an imported model: its own VAE and T5, as the latent cache was encoded (`codec.external.encode_track`)."""
    from songtrace.codec.external import encode_track

    if ctx.latents.text_encoder != codec.text_encoder:
        raise SongtraceError(f"--codec {codec.source}: its text encoder is not the one the latent cache was encoded with "
                             f"({codec.text_encoder} vs {ctx.latents.text_encoder}); pass the model's own folder")
    track = encode_track(codec, wav, sr, ctx.caption or "")
    latent, frames = pad_latent(track["latent"], _model_length(ctx), str(path))
    frames = min(frames, int(track["n_frames"]))
    if ctx.caption:
        text, mask = fit_text(track["text"], track["text_mask"], int(ctx.latents.text.shape[1]), str(path))
    else:
        text, mask = caption_tokens(None, ctx)
    cropped = len(wav) > codec.n_samples * sr / codec.sample_rate
    return make_query(path.stem, "audio", latent, frames, text, mask, track["seconds_start"], track["seconds_total"], **meta,
                      cropped=cropped)


_PROMPT = re.compile(r"^prompt:(?P<text>.+)@(?P<seed>-?\d+)$", re.DOTALL)


def _resolve_prompt(spec: str, ctx: QueryContext) -> Query:
    m = _PROMPT.match(spec)
    if not m:
        raise SongtraceError(f"bad prompt query {spec!r}; the form is prompt:TEXT@SEED, e.g. 'prompt:a calm chorale@3'")
    if (ctx.model_dir is None and ctx.model is None) or (ctx.codec_dir is None and ctx.codec is None):
        raise SongtraceError("a prompt query needs the model and the codec to generate with (pass --model and --codec)")
    from songtrace.model.generate import generate

    text, seed = m.group("text").strip(), int(m.group("seed"))
    if not text:
        raise SongtraceError(f"prompt query {spec!r} has an empty prompt; the form is prompt:TEXT@SEED, e.g. 'prompt:a calm chorale@3'")
    seconds = ctx.seconds if ctx.seconds is not None else full_length_seconds(ctx)
    track = generate(ctx.loaded_model(), ctx.loaded_codec(), text, seconds, seed=seed, **ctx.generate_options)
    latent, _ = pad_latent(track.latent, _model_length(ctx), spec)
    tokens, mask = fit_text(track.text, track.text_mask, int(ctx.latents.text.shape[1]), spec)
    meta = {"source": spec, "prompt": text, "seed": seed, "seconds": seconds, "sampler": track.sampler, "sampler_steps": track.steps}
    query = make_query(spec, "prompt", latent, track.n_frames, tokens, mask, 0.0, seconds, **meta)
    query.generated = track
    return query


def full_length_seconds(ctx: QueryContext) -> float:
    """The model's full length in seconds (frames × samples per frame / sample rate of the codec)."""
    codec = ctx.loaded_codec()
    return _model_length(ctx) * codec.samples_per_frame / codec.sample_rate


QUERY_KINDS: dict[str, QueryKind] = {
    "train": QueryKind("train:ID", lambda s: s.startswith("train:"), _resolve_train),
    "prompt": QueryKind("prompt:TEXT@SEED", lambda s: s.startswith("prompt:"), _resolve_prompt),
    "latent": QueryKind(f"PATH{LATENT_SUFFIX}", lambda s: s.endswith(LATENT_SUFFIX), _resolve_latent),
    "audio": QueryKind("PATH.wav|.flac|.ogg", lambda s: s.lower().endswith(AUDIO_SUFFIXES), _resolve_audio),
}


def query_kind(spec: str) -> str:
    """The kind of a query spec, with an error listing the valid forms."""
    for name, kind in QUERY_KINDS.items():
        if kind.matches(spec):
            return name
    forms = "; ".join(k.form for k in QUERY_KINDS.values())
    raise SongtraceError(f"cannot read query {spec!r}; valid forms: {forms}")


def resolve_query(spec: str, ctx: QueryContext) -> Query:
    """Resolve a query spec into a `Query` (a one-item batch shaped like the training data)."""
    kind = query_kind(spec)
    query = QUERY_KINDS[kind].resolve(spec, ctx)
    check_batch(query.batch, f"query {spec}", latent_shape=ctx.latents.latent_shape, text_dim=int(ctx.latents.text.shape[2]))
    return query
