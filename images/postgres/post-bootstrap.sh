#!/bin/sh
# Patroni's post_bootstrap hook on a new cluster's first leader: create the
# messaging database (the single node's entrypoint does the same on first start).
# Patroni passes a superuser connection string as the only argument.
set -eu
psql --no-psqlrc --set=ON_ERROR_STOP=1 --dbname="$1" --set=db="${PGMSG_DATABASE:-messaging}" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') \gexec
SQL
