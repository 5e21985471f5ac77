"""songtrace.data: the value types every stage passes around (Batch, Conditioning, LatentSet) and audio helpers."""
