"""The world: the offline demo world (music21 corpus rendered with a GM SoundFont) and imported audio folders.

Both are directories with `audio/<id>.wav`, `manifest.parquet` and `config.json`, read by `load_world`.
"""

from songtrace.world.artists import ARTISTS, Artist, Voice, artist_by_name
from songtrace.world.build import build_world
from songtrace.world.config import ImportConfig, WorldConfig
from songtrace.world.importer import import_world
from songtrace.world.plan import TrackPlan, plan_world
from songtrace.world.world import MANIFEST_COLUMNS, World, find_world, load_world, manifest_hash

__all__ = [
    "ARTISTS",
    "MANIFEST_COLUMNS",
    "Artist",
    "ImportConfig",
    "TrackPlan",
    "Voice",
    "World",
    "WorldConfig",
    "artist_by_name",
    "build_world",
    "find_world",
    "import_world",
    "load_world",
    "manifest_hash",
    "plan_world",
]
