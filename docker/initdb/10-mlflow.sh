#!/usr/bin/env bash
# Runs once, when the TimescaleDB volume is empty: the MLflow backend store gets its own
# role and database on the same server (the selflearn role does not own it).
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v mlflow_password="${MLFLOW_DB_PASSWORD:?}" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
