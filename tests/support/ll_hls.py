"""Parses a low-latency HLS media playlist with the `m3u8` library (Debian's python3-m3u8),
independently of Strata's writer, and prints what it read as JSON for the Rust tests."""

import json
import sys

import m3u8


def part(p):
    return {"uri": p.uri, "duration": p.duration, "independent": bool(p.independent)}


def main():
    playlist = m3u8.loads(sys.stdin.read())
    segments = []
    trailing = []
    for s in playlist.segments:
        parts = [part(p) for p in s.parts]
        if s.uri is None:
            trailing.extend(parts)  # parts of the segment being produced
        else:
            segments.append({"uri": s.uri, "duration": s.duration, "parts": parts})
    control = playlist.server_control
    hint = playlist.preload_hint
    out = {
        "version": playlist.version,
        "target_duration": playlist.target_duration,
        "media_sequence": playlist.media_sequence,
        "can_block_reload": control.can_block_reload if control else None,
        "part_hold_back": control.part_hold_back if control else None,
        "can_skip_until": control.can_skip_until if control else None,
        "part_target": playlist.part_inf.part_target if playlist.part_inf else None,
        "segments": segments,
        "open_parts": trailing,
        "preload_hint": {"type": hint.hint_type, "uri": hint.uri} if hint else None,
        "rendition_reports": [
            {"uri": r.uri, "last_msn": r.last_msn, "last_part": r.last_part}
            for r in playlist.rendition_reports
        ],
        "skipped_segments": playlist.skip.skipped_segments if playlist.skip else 0,
        "ended": playlist.is_endlist,
    }
    json.dump(out, sys.stdout)


main()
