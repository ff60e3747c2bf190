#!/bin/sh
# Publish an event to one user's ssehub streams from the shell, two ways.
#
#   REDIS_URL=redis://localhost:6379 ./publish.sh demo-user
#   SSEHUB_URL=http://localhost:8080 SSEHUB_TOKEN=<jwt> ./publish.sh demo-user
#
# 1. Straight into Redis (7.0 or later):
#    FCALL ssehub_publish 2 <prefix>:{<tag>}:m <prefix>:{<tag>}:h <kind> <event>, the function the
#    hub loads into Redis (<tag>: the user id with %, { and } percent-encoded). It gives the event
#    an id, keeps it in the user's history for browsers that reconnect with Last-Event-ID,
#    delivers it, and prints the id.
# 2. Over HTTP: POST /api/v1/webhook/<kind> with the event plus a top-level "user_id". The
#    token's user (sub) must be that user_id, or the token must have the "service" role.
set -eu

USER_ID="${1:-demo-user}"
PREFIX="${SSEHUB_CHANNEL_PREFIX:-ssehub}"
TAG="$(printf '%s' "$USER_ID" | sed 's/%/%25/g; s/{/%7B/g; s/}/%7D/g')"

if [ -n "${REDIS_URL:-}" ]; then
  redis-cli -u "$REDIS_URL" FCALL ssehub_publish 2 "$PREFIX:{$TAG}:m" "$PREFIX:{$TAG}:h" agui \
    '{"type":"TEXT_MESSAGE_CONTENT","messageId":"m1","delta":"hello from redis-cli"}'
fi

if [ -n "${SSEHUB_TOKEN:-}" ]; then
  # 202 {"status":"broadcasted","id":"<epoch>:<ms>-<seq>",...} on success.
  curl -sS -X POST "${SSEHUB_URL:-http://localhost:8080}/api/v1/webhook/agui" \
    -H "Authorization: Bearer $SSEHUB_TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"user_id\":\"$USER_ID\",\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m2\",\"delta\":\"hello from curl\"}"
  echo
fi

if [ -z "${REDIS_URL:-}" ] && [ -z "${SSEHUB_TOKEN:-}" ]; then
  echo "set REDIS_URL (publish through Redis) and/or SSEHUB_TOKEN (publish through the webhook)" >&2
  exit 2
fi
