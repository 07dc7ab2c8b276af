"""The sample services of the seed document, as thin processes over pgmsg.Client.

Each reads its settings from PGMSG_* environment variables, logs JSON lines,
exposes Prometheus metrics and stops cleanly on SIGTERM.
"""
