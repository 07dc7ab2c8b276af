"""pgmsg benchmark suite: pgmsg and its peers measured side by side on the project's PostgreSQL image.

Run with ``./bench/run.sh`` (full) or ``./bench/run.sh --smoke`` (seconds, proves the harness works).
"""
