"""The music21 corpus as a source of pieces: collections, piece references, and parsing a piece to note arrays.

A `Piece` names one work of the bundled corpus (a file, or one tune of a multi-tune ABC file).
Listing pieces only reads file names and ABC `X:`/`T:` lines, so planning a world never parses
music; `parse_piece` parses just the chosen piece into per-part note arrays.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from songtrace.errors import SongtraceError


@dataclasses.dataclass(frozen=True)
class Piece:
    """One work of the music21 corpus: a path relative to the corpus root and, for ABC books, a tune number."""

    collection: str
    path: str
    number: int | None = None
    title: str = ""

    @property
    def source(self) -> str:
        """The manifest's `source`: corpus path, plus `#<X number>` for a tune of an ABC book."""
        return self.path if self.number is None else f"{self.path}#{self.number}"


@dataclasses.dataclass
class PieceNotes:
    """A parsed piece: per-part note arrays [n, 3] (onset, duration in quarter notes, MIDI pitch) and its layout."""

    parts: list[np.ndarray]
    length: float  # quarter notes
    measure_starts: np.ndarray  # quarter-note offsets of the measures of the first part
    meter: str
    bar_length: float  # quarter notes per bar
    title: str


def corpus_root() -> Path:
    """Directory of music21's bundled corpus."""
    from music21 import common

    return Path(common.getCorpusFilePath())


# --------------------------------------------------------------------------- listing


_X_LINE = re.compile(r"^X:\s*(\d+)", re.MULTILINE)
_T_LINE = re.compile(r"^T:\s*(.*)$")


def _abc_tunes(path: Path) -> list[tuple[int, str]]:
    """The (X number, first title) of every tune in an ABC file, first occurrence of each number."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    tunes: dict[int, str] = {}
    for block in re.split(r"(?m)^(?=X:)", text):
        m = _X_LINE.match(block)
        if not m:
            continue
        number = int(m.group(1))
        title = ""
        for line in block.splitlines()[1:12]:
            t = _T_LINE.match(line)
            if t:
                title = t.group(1).strip()
                break
        tunes.setdefault(number, title)
    return sorted(tunes.items())


def _files(pattern: str, max_kb: int | None = None) -> list[Path]:
    """Corpus files matching a glob pattern, sorted, optionally below a size limit (large scores parse slowly)."""
    root = corpus_root()
    files = sorted(root.glob(pattern))
    if max_kb is not None:
        files = [f for f in files if f.stat().st_size <= max_kb * 1024]
    return files


def _file_pieces(collection: str, patterns: tuple[str, ...], max_kb: int | None = None) -> list[Piece]:
    """One piece per file."""
    root = corpus_root()
    out = []
    for pattern in patterns:
        out += [Piece(collection, f.relative_to(root).as_posix()) for f in _files(pattern, max_kb)]
    return out


def _abc_pieces(collection: str, patterns: str | tuple[str, ...]) -> list[Piece]:
    """One piece per tune of every ABC file matching the patterns; a title seen before (another setting of the same tune) is skipped."""
    root = corpus_root()
    out = []
    seen: set[str] = set()
    patterns = (patterns,) if isinstance(patterns, str) else patterns
    for f in [f for pattern in patterns for f in _files(pattern)]:
        rel = f.relative_to(root).as_posix()
        for number, title in _abc_tunes(f):
            key = re.sub(r"\W+", " ", title.lower()).strip()
            if key and key in seen:
                continue
            seen.add(key)
            out.append(Piece(collection, rel, number, title))
    return out


def _chorale_pieces() -> list[Piece]:
    """Bach's chorales, one per chorale tune: later harmonisations of a tune already listed are skipped."""
    seen: set[str] = set()
    out = []
    for piece in _file_pieces("bach_chorales", ("bach/bwv*.mxl",)):
        title = chorale_title(Path(piece.path).stem.removeprefix("bwv"))
        if title and title in seen:
            continue
        seen.add(title)
        out.append(Piece(piece.collection, piece.path, None, title))
    return out


# German songs of the Essen collection (it also holds Chinese, Irish, Icelandic and test files), children's songs apart.
GERMAN_FOLK_FILES = tuple(
    f"essenFolksong/{name}.abc"
    for name in ("altdeu10", "altdeu20", "ballad10", "ballad20", "ballad30", "ballad40", "ballad50", "ballad60", "ballad70", "ballad80",
                 "boehme10", "boehme20", "dva0", "erk10", "erk20", "erk30", "fink0", "zuccal0")
)

# Collections of the corpus the artists draw from; values list the pieces (cheap: no music parsing).
COLLECTIONS: dict[str, Callable[[], list[Piece]]] = {
    "bach_chorales": _chorale_pieces,
    "palestrina": lambda: _file_pieces("palestrina", ("palestrina/*.krn",)),
    "oneills1850": lambda: _abc_pieces("oneills1850", "oneills1850/*.abc"),
    "ryans_mammoth": lambda: _abc_pieces("ryans_mammoth", "ryansMammoth/*.abc"),
    "essen_folk": lambda: _abc_pieces("essen_folk", GERMAN_FOLK_FILES),
    "essen_children": lambda: _abc_pieces("essen_children", "essenFolksong/kinder0.abc"),
    "monteverdi": lambda: _file_pieces("monteverdi", ("monteverdi/*.mxl",)),
    "string_quartets": lambda: _file_pieces(
        "string_quartets",
        ("haydn/*/*.mxl", "mozart/k1*/*.mxl", "mozart/k458/*.mxl", "mozart/k80/*.mxl", "beethoven/*/*.mxl"),
        max_kb=20,
    ),
    "airds_airs": lambda: _abc_pieces("airds_airs", "airdsAirs/*.abc"),
    "american_fife": lambda: _abc_pieces("american_fife", "miscFolk/americanfifeopus.abc"),
    "trecento": lambda: _file_pieces("trecento", ("trecento/*.xml",), max_kb=400),
}


@functools.cache
def list_pieces(collection: str) -> tuple[Piece, ...]:
    """All pieces of a collection, in a fixed order (cached per process)."""
    if collection not in COLLECTIONS:
        raise SongtraceError(f"unknown corpus collection {collection!r}; valid: {', '.join(COLLECTIONS)}")
    pieces = tuple(COLLECTIONS[collection]())
    if not pieces:
        raise SongtraceError(f"music21 corpus collection {collection!r} has no pieces under {corpus_root()}")
    return pieces


# --------------------------------------------------------------------------- titles


@functools.cache
def _chorale_titles() -> dict[str, str]:
    """BWV number -> chorale title, from music21's Riemenschneider list."""
    from music21.corpus import chorales

    return {str(k): v["title"] for k, v in chorales.ChoraleListRKBWV().byBWV.items()}


def chorale_title(bwv: str) -> str:
    """The title of a Bach chorale by BWV number ("" when music21's list does not have it)."""
    titles = _chorale_titles()
    return titles.get(bwv) or titles.get(bwv.split(".")[0]) or ""


def _clean(text: str) -> str:
    """Strip numbering, file extensions and ABC's "--" from a title and fix SHOUTED CAPS."""
    text = re.sub(r"\.(mxl|xml|krn|abc)$", "", text.strip())
    text = re.sub(r"^\d+\.\s*", "", text).replace(" -- ", ", ").replace("_", " ").strip(" .\"'")
    if text.isupper():
        text = " ".join(w.capitalize() for w in text.lower().split())
    article = re.match(r"^(.*), (The|A|An)$", text)  # "Bouncing Boy, The" -> "The Bouncing Boy"
    return f"{article.group(2)} {article.group(1)}" if article else text


def _is_file_name(text: str | None) -> bool:
    """Whether a metadata field merely repeats a file name (music21 fills some that way)."""
    return bool(text) and bool(re.fullmatch(r"[\w. -]+\.(mxl|xml|krn|abc)", text or ""))


def _palestrina_title(stem: str, title: str | None, movement: str | None) -> str:
    """`Credo_03_d` with section "Et unam sanctam" -> "Credo (Mass 3): Et unam sanctam"."""
    m = re.match(r"([A-Za-z]+(?:_I+)?)(?:_(\d+))?(?:_([a-z]))?$", stem)
    name = m.group(1).replace("_", " ") if m else _clean(stem)
    out = f"{name} (Mass {int(m.group(2))})" if m and m.group(2) else name
    section = title if movement else None
    if section and section not in ("First Section", name):
        out += f": {_clean(section)}"
    return out


def _monteverdi_title(stem: str, fields: tuple[str | None, ...]) -> str:
    """`madrigal.3.1` -> "La Giovinetta Pianta (Madrigal, Book 3 No. 1)" when an incipit is recorded."""
    book, _, number = stem.removeprefix("madrigal.").partition(".")
    label = f"Madrigal, Book {book} No. {number}"
    incipit = next((f for f in fields if f and re.match(r"^\d+\.\s", f)), None)
    return f"{_clean(incipit)} ({label})" if incipit else label


def piece_title(piece: Piece, metadata_title: str | None, movement: str | None, composer: str | None = None) -> str:
    """A readable title for a piece from its metadata, falling back to its file name."""
    stem = Path(piece.path).stem
    if piece.collection == "bach_chorales":
        bwv = stem.removeprefix("bwv")
        title = chorale_title(bwv)
        return f"{title} (BWV {bwv})" if title else f"Chorale BWV {bwv}"
    if piece.collection == "string_quartets":
        parts = Path(piece.path).parts
        work = parts[1].replace("opus", "Op. ").replace("no", " No. ").replace("k", "K. ")
        return f"{parts[0].capitalize()}, String Quartet {work}, movement {stem.replace('movement', '')}"
    if piece.collection == "palestrina":
        return _palestrina_title(stem, metadata_title, movement)
    if piece.collection == "monteverdi":
        return _monteverdi_title(stem, (metadata_title, movement, composer))
    for candidate in (piece.title, metadata_title, movement):
        if candidate and not _is_file_name(candidate) and _clean(candidate):
            return _clean(candidate)
    return _clean(stem.split("-")[-1])


# --------------------------------------------------------------------------- parsing

_VOICE_PART_NAMES = {"soprano", "alto", "tenor", "bass"}
MAX_PARTS = 8


def _parse_stream(piece: Piece):
    """Parse one piece with music21 from source, without writing music21's pickle cache."""
    from music21 import converter

    path = corpus_root() / piece.path
    if not path.exists():
        raise SongtraceError(f"music21 corpus file {path} not found (is music21's corpus installed?)")
    conv = converter.Converter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            conv.parseFile(path, number=piece.number, forceSource=True, storePickle=False)
        except Exception as e:  # music21 raises many exception types for malformed sources
            raise SongtraceError(f"music21 could not parse {piece.source}: {e}") from None
    return conv.stream


def _sounding(n) -> list[tuple[float, str | None]]:
    """(MIDI pitch, tie type) of each pitch of a note or chord."""
    if hasattr(n, "notes") and n.notes:  # a chord: ties may sit on its notes or on the chord
        chord_tie = n.tie.type if n.tie is not None else None
        return [(float(x.pitch.midi), x.tie.type if x.tie is not None else chord_tie) for x in n.notes]
    return [(float(p.midi), n.tie.type if n.tie is not None else None) for p in n.pitches]


def _part_notes(part) -> np.ndarray:
    """A part's sounding notes as [n, 3] (onset, duration, MIDI pitch), ties merged, chord symbols and grace notes dropped.

    Ties are merged here rather than with music21's `stripTies`, which is 10-30x slower on long scores.
    """
    from music21 import harmony

    rows: list[list[float]] = []
    open_ties: dict[float, int] = {}
    for n in part.flatten().notes:
        if isinstance(n, harmony.Harmony):
            continue
        ql = float(n.duration.quarterLength)
        if ql <= 0:
            continue
        onset = float(n.offset)
        for midi, tie in _sounding(n):
            held = open_ties.get(midi)
            if tie in ("continue", "stop") and held is not None:
                rows[held][1] = onset + ql - rows[held][0]
                if tie == "stop":
                    del open_ties[midi]
                continue
            rows.append([onset, ql, midi])
            if tie in ("start", "continue"):
                open_ties[midi] = len(rows) - 1
            else:
                open_ties.pop(midi, None)
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return arr[np.lexsort((arr[:, 2], arr[:, 0]))] if len(arr) else arr


def parse_piece(piece: Piece) -> PieceNotes:
    """Parse a piece into note arrays, keeping the SATB parts of chorales (dropping instrumental doublings)."""
    from music21 import meter, stream

    score = _parse_stream(piece)
    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    sung = [p for p in parts if (p.partName or "").strip().lower() in _VOICE_PART_NAMES]
    if len(sung) >= 4:
        parts = sung
    notes = [a for a in (_part_notes(p) for p in parts[:MAX_PARTS]) if len(a)]
    if not notes:
        raise SongtraceError(f"music21 corpus piece {piece.source} has no notes")
    length = max(float((a[:, 0] + a[:, 1]).max()) for a in notes)
    ts = next(iter(score.recurse().getElementsByClass(meter.TimeSignature)), None)
    meter_str = ts.ratioString if ts is not None else "4/4"
    bar = float(ts.barDuration.quarterLength) if ts is not None else 4.0
    starts = np.asarray(sorted({float(m.offset) for m in parts[0].getElementsByClass(stream.Measure)}), dtype=np.float64)
    if len(starts) == 0:
        starts = np.arange(0.0, length, bar)
    md = score.metadata
    title = piece_title(piece, md.title if md else None, md.movementName if md else None, md.composer if md else None)
    return PieceNotes(parts=notes, length=length, measure_starts=starts, meter=meter_str, bar_length=bar, title=title)
