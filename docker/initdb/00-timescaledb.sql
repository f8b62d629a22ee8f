-- Runs once, when the TimescaleDB volume is empty (docker-entrypoint-initdb.d), in the
-- selflearn database. The image's own 000_install_timescaledb.sh already installs the
-- extension; this keeps the requirement explicit and idempotent. The event archive
-- (projections/archive.py) then creates its hypertable, compression after 7 days and
-- the hot-window retention by itself.
CREATE EXTENSION IF NOT EXISTS timescaledb;
