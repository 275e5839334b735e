#!/usr/bin/env bash
# Writes what compose.yaml needs and the repository must not hold: .env (the database and
# admin passwords, the registry profile) and one file per secret under secrets/. Random
# values, made once: existing files are kept, so running it again changes nothing.
#
# secrets/ is mode 700 (only you can enter it) and its files are mode 644: compose mounts
# each file into its container, where the services run as other users (10001, Grafana's 472)
# and must be able to read it.
set -euo pipefail
cd "$(dirname "$0")"

random() { openssl rand -hex "$1"; }

# write FILE CONTENT MODE: only when FILE does not exist yet.
write() {
  if [[ -e $1 ]]; then return; fi
  (umask 077 && printf '%s\n' "$2" >"$1.tmp")
  chmod "$3" "$1.tmp"
  mv "$1.tmp" "$1"
  echo "wrote infra/deploy/$1" >&2
}

write .env "COMPOSE_PROFILES=confluent-registry
COMMERCE_IMAGE=commerce/backend:dev
POSTGRES_PASSWORD=$(random 16)
ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD=$(random 12)" 600

install -d -m 700 secrets
if [[ ! -e secrets/process_manager_secret ]]; then
  pm=$(random 20)
  write secrets/auth_clients "process-manager=$pm" 644
  write secrets/process_manager_secret "$pm" 644
fi
write secrets/webhook_secrets "$(random 20)" 644
write secrets/registry_password "$(random 12)" 644
write secrets/grafana_admin_password "$(random 12)" 644
