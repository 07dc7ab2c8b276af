"""pgAdmin settings of the pgmsg image (read by pgAdmin's config.py after its defaults).

Everything pgAdmin keeps lives in the data volume, and pgAdmin makes no calls of
its own to the internet: the deployment may have no route there.
"""

import logging
import os

# Multi-user web server with a login page (not the desktop runtime).
SERVER_MODE = True

# The data volume: configuration database, sessions, user files, log.
DATA_DIR = "/var/lib/pgadmin"
SQLITE_PATH = "/var/lib/pgadmin/pgadmin4.db"
SESSION_DB_PATH = "/var/lib/pgadmin/sessions"
STORAGE_DIR = "/var/lib/pgadmin/storage"
AZURE_CREDENTIAL_CACHE_DIR = "/var/lib/pgadmin/azurecredentialcache"
KERBEROS_CCACHE_DIR = "/var/lib/pgadmin/krbccache"
LOG_FILE = "/var/lib/pgadmin/pgadmin4.log"
LOG_ROTATION_MAX_LOG_FILES = 5
# Warnings and errors also go to the console, that is to docker logs.
CONSOLE_LOG_LEVEL = logging.WARNING
FILE_LOG_LEVEL = logging.WARNING

# No outbound calls: no version check, no Gravatar images, no AI assistant,
# no scanning of the container for local PostgreSQL installations.
UPGRADE_CHECK_ENABLED = False
SHOW_GRAVATAR_IMAGE = False
LLM_ENABLED = False
AUTO_DISCOVER_SERVERS = False
CHECK_EMAIL_DELIVERABILITY = False

# Backup, restore and the other tools use the image's postgresql-client.
DEFAULT_BINARY_PATHS = {"pg": "/usr/bin"}

# Where TLS is on, the deployment's CA certificate (mounted read-only by the pgadmin role) as a
# shared storage: in server mode pgAdmin opens certificate files only inside a storage, so the
# server list names it "pgmsg-tls:/ca.crt" (its sslrootcert).
if os.environ.get("PGMSG_TLS_CA_DIR"):
    SHARED_STORAGE = [
        {"name": "pgmsg-tls", "path": os.environ["PGMSG_TLS_CA_DIR"], "restricted_access": True}
    ]
