#!/usr/bin/env bash
# Create the selflearn topics once, with a fixed partition count (docker/compose.yaml `kafka-init`).
#
# Partitions are fixed at creation: every topic keyed by agent id has the same count, so an
# agent's events land on the same partition number in every topic (co-partitioning), and the
# learning projection's per-partition checkpoints stay valid. An existing topic with another
# count is an error here, never silently "fixed": changing it re-keys every agent.
set -euo pipefail

bin=/opt/kafka/bin
bootstrap="${KAFKA_BOOTSTRAP:-kafka:9093}"
config=/etc/kafka/client-ssl.properties
prefix="${SELFLEARN_TOPIC_PREFIX:?}"
partitions="${SELFLEARN_PARTITIONS:?}"
rf="${KAFKA_REPLICATION_FACTOR:-1}"
events_ms="${KAFKA_EVENT_RETENTION_MS:-604800000}"   # 7 days: the archive keeps the rest
dlq_ms="${KAFKA_DLQ_RETENTION_MS:-2592000000}"       # 30 days to inspect and re-drive
export KAFKA_HEAP_OPTS="-Xmx256m"

# topic  retention.ms
topics=(
  "agent     $events_ms"
  "frames    $events_ms"
  "decisions $events_ms"
  "learning  $events_ms"
  "control   -1"
  "dlq       $dlq_ms"
)

for line in "${topics[@]}"; do
  read -r stream retention <<<"$line"
  topic="$prefix.$stream"
  "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$config" \
    --create --if-not-exists --topic "$topic" --partitions "$partitions" \
    --replication-factor "$rf" \
    --config "retention.ms=$retention" --config cleanup.policy=delete \
    --config "min.insync.replicas=$(( rf > 1 ? 2 : 1 ))"
  have=$("$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$config" \
    --describe --topic "$topic" | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -1)
  if [ "$have" != "$partitions" ]; then
    echo "topic $topic has $have partitions, SELFLEARN_PARTITIONS=$partitions:" \
         "partitions are fixed at creation (docs/production.md)" >&2
    exit 1
  fi
  echo "$topic: $have partitions, retention.ms=$retention"
done
