"""Acquire training audio from the web, resiliently (``cadenza acquire``).

``items`` (input lines) -> ``downloader`` (yt-dlp, worker threads, tenacity backoff,
``pacing``: adaptive delays, Retry-After and a per-site circuit breaker) ->
``standardize`` (ffmpeg -> 16 kHz mono MP3) -> ``validate`` (full decode, duration
bounds) -> ``manifest`` (JSON lines, resumable). Nothing is imported here, so
``cadenza --help`` stays fast.
"""
