#!/bin/sh
# Creates the deployment's secrets as files for docker-compose.yml (docs/operations.md, "Connection
# security and secrets"): random passwords and keys, a private CA for Temporal with the server's and
# the clients' certificates, and a self-signed stand-in for the web interface's certificate.
#
#   sudo deploy/init-secrets.sh [DIRECTORY]      (default: ./secrets beside docker-compose.yml)
#
# Needs openssl. Never overwrites a file that exists: run it again after deleting a file to make a
# new one (rotation), or to fill in what is missing. Run it as root, so that each file belongs to
# the user of the container that reads it (Compose mounts secret files with their owner and mode).
# Nothing here is ever printed.
set -eu

DIR=${1:-"$(cd "$(dirname "$0")/.." && pwd)/secrets"}
APP_UID=10001        # the project image's user (Dockerfile)
TEMPORAL_UID=1000    # the temporalio/server image's user
DAYS_CA=3650
DAYS_LEAF=825
WEB_HOSTNAME=${WEB_HOSTNAME:-localhost}

umask 077
mkdir -p "$DIR/ca"
chmod 700 "$DIR" "$DIR/ca"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ "$(id -u)" != 0 ]; then
    echo "init-secrets: not root: the files stay yours; the containers' users (uid $APP_UID," \
         "$TEMPORAL_UID) cannot read those of mode 0600 until you chown them (see docs/operations.md)" >&2
fi

own() {  # own UID MODE FILE: who reads it in its container, and how
    chmod "$2" "$3"
    if [ "$(id -u)" = 0 ]; then chown "$1:$1" "$3"; fi
}

secret() {  # secret NAME UID MODE COMMAND...: the command's output, once
    name=$1 uid=$2 mode=$3
    shift 3
    [ -e "$DIR/$name" ] && return 0
    "$@" > "$TMP/$name"
    mv "$TMP/$name" "$DIR/$name"
    own "$uid" "$mode" "$DIR/$name"
    echo "init-secrets: made $name"
}

key32() { openssl rand -base64 32; }
password() { openssl rand -hex 32; }
codec_keys() { printf 'k1:%s\n' "$(openssl rand -base64 32)"; }
nothing() { :; }

# Passwords. PostgreSQL's superuser (used only to create the roles), Temporal's database user, the
# event store's schema owner and the application's role: read by the postgres, temporal and
# admin-tools images (various users) and by the app, hence 0644 inside the 0700 directory.
secret postgres-password 0 644 password
secret temporal-db-password 0 644 password
secret events-db-owner-password 0 644 password
secret events-db-password 0 644 password
# The application's keys: read by the worker, the web interface and the CLI (uid 10001) only; the
# key files must be 0600 (the application refuses others).
secret event-cipher.key "$APP_UID" 600 key32
secret decision-signing.key "$APP_UID" 600 key32
secret chain-signing.key "$APP_UID" 600 key32
secret web-session.key "$APP_UID" 600 key32
secret totp-secrets.key "$APP_UID" 600 key32
secret codec-keys "$APP_UID" 600 codec_keys
secret codec-server-token "$APP_UID" 600 password
# Empty: no SMTP login. Put the relay's password here (no line break needed) when it wants one.
secret smtp-password "$APP_UID" 600 nothing

# --- Temporal's private CA and certificates (mutual TLS) --------------------------------------
leaf() {  # leaf NAME CN UID KEYMODE EXTENDED_KEY_USAGE [SUBJECT_ALT_NAME]
    name=$1 cn=$2 uid=$3 keymode=$4 eku=$5 san=${6:-}
    [ -e "$DIR/$name.crt" ] && return 0
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
    } > "$TMP/$name.ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" \
        -keyout "$TMP/$name.key" -out "$TMP/$name.csr" 2>/dev/null
    openssl x509 -req -in "$TMP/$name.csr" -CA "$DIR/temporal-ca.crt" -CAkey "$DIR/ca/temporal-ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS_LEAF" -sha256 \
        -extfile "$TMP/$name.ext" -out "$TMP/$name.crt" 2>/dev/null
    mv "$TMP/$name.key" "$DIR/$name.key"
    own "$uid" "$keymode" "$DIR/$name.key"
    mv "$TMP/$name.crt" "$DIR/$name.crt"
    own 0 644 "$DIR/$name.crt"
    echo "init-secrets: made $name.crt and $name.key"
}

if [ ! -e "$DIR/temporal-ca.crt" ]; then
    # The CA's key signs certificates and nothing else: keep it offline once they are issued.
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -days "$DAYS_CA" -subj "/CN=Urgent appeals Temporal CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$DIR/ca/temporal-ca.key" -out "$TMP/temporal-ca.crt" 2>/dev/null
    own 0 600 "$DIR/ca/temporal-ca.key"
    mv "$TMP/temporal-ca.crt" "$DIR/temporal-ca.crt"
    own 0 644 "$DIR/temporal-ca.crt"
    echo "init-secrets: made temporal-ca.crt (its key: ca/temporal-ca.key)"
fi
# The server: its frontend, and its own services between themselves (the same certificate is
# also their client certificate, hence clientAuth). Its name is the compose service's, temporal.
leaf temporal-server temporal "$TEMPORAL_UID" 600 serverAuth,clientAuth "DNS:temporal"
# The application's processes: worker, web interface, CLI.
leaf temporal-client appeals "$APP_UID" 600 clientAuth
# The operators' tools: the Temporal UI and the admin tools (images with other users: 0644).
leaf temporal-operator temporal-operator 0 644 clientAuth

# --- The web interface's certificate: replace this stand-in with one a browser trusts ---------
if [ ! -e "$DIR/web-tls.crt" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 90 \
        -subj "/CN=$WEB_HOSTNAME" -addext "subjectAltName=DNS:$WEB_HOSTNAME" \
        -keyout "$TMP/web-tls.key" -out "$TMP/web-tls.crt" 2>/dev/null
    mv "$TMP/web-tls.key" "$DIR/web-tls.key"
    own 0 600 "$DIR/web-tls.key"
    mv "$TMP/web-tls.crt" "$DIR/web-tls.crt"
    own 0 644 "$DIR/web-tls.crt"
    echo "init-secrets: made web-tls.crt, SELF-SIGNED for $WEB_HOSTNAME: replace web-tls.crt and" \
         "web-tls.key with your host's certificate (full chain) and key before staff use it" >&2
fi
