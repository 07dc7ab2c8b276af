#!/bin/sh
# Healthy means: the server accepts connections on its socket and the
# messaging database answers a query (not merely that the postmaster is up).
set -eu
exec psql --no-psqlrc --quiet --tuples-only --username=postgres \
    --dbname="${PGMSG_DATABASE:-messaging}" --command='SELECT 1' >/dev/null
