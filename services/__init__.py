"""The sample services: short programs over pgmsg, to read and copy.

Each is a process the deployment runs (roles/pgmsg_services) from the services
image: settings from PGMSG_* environment variables, JSON log lines, Prometheus
metrics and a clean stop on SIGTERM, all through pgmsg.runtime. See README.md
here for which container runs which program.
"""
