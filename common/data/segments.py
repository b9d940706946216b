"""Cutting clips into fixed-length segments (GTZAN's 3 s excerpts of 30 s songs).

A manifest entry of a segment carries its clip (``clip_id``), where it starts
(``start_s``) and how long it is (``duration_s``, also SpeechBrain's sorting
key ``duration``); everything else (label, path) is the clip's.
"""

import math

from common.errors import DataError

# A segment is kept when at least this share of it lies inside the clip (the rest
# is zero-padded on loading), so songs a few hundredths of a second short of 30 s
# still give ten 3 s segments, while a 5 s clip does not give a mostly empty second one.
MIN_SEGMENT_COVERAGE = 0.9


def segment_starts(duration_s, segment_s, hop_s=None, min_coverage=MIN_SEGMENT_COVERAGE):
    """Start times (s) of the segments of a clip: every ``hop_s`` from 0 while a segment
    is at least ``min_coverage`` inside the clip. A clip shorter than that gives one
    (padded) segment, so no clip is lost."""
    hop_s = segment_s if hop_s is None else hop_s
    if segment_s <= 0 or hop_s <= 0:
        raise DataError(f"segment_s={segment_s} and hop_s={hop_s} must be positive.")
    n = math.floor((duration_s - min_coverage * segment_s) / hop_s + 1e-9) + 1
    return [round(k * hop_s, 6) for k in range(max(1, n))]


def segment_id(clip_id, index):
    """The manifest key of a clip's ``index``-th segment."""
    return f"{clip_id}-seg{index:02d}"


def segment_entries(entries, segment_s, hop_s=None, min_coverage=MIN_SEGMENT_COVERAGE):
    """Whole-clip manifest entries (each with its ``duration``) -> entries of their segments."""
    segments = {}
    for clip_id, entry in entries.items():
        if "duration" not in entry:
            raise DataError(f"Manifest entry {clip_id!r} has no 'duration'; re-run the data preparation.")
        for k, start in enumerate(segment_starts(float(entry["duration"]), segment_s, hop_s, min_coverage)):
            segments[segment_id(clip_id, k)] = {
                **entry,
                "clip_id": clip_id,
                "clip_duration": float(entry["duration"]),
                "start_s": start,
                "duration_s": float(segment_s),
                "duration": float(segment_s),
            }
    return segments
