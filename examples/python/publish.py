#!/usr/bin/env python3
"""Publish an event to one user's ssehub streams through Redis.

    pip install redis
    python3 publish.py demo-user "hello from python"

REDIS_URL (default redis://localhost:6379) and SSEHUB_CHANNEL_PREFIX (default ssehub) must
match the hub's settings.
"""
import json
import os
import sys

import redis

KINDS = ("agui", "a2a", "system", "analytics")


def publish(r: "redis.Redis", kind: str, user_id: str, event: dict) -> int:
    """Publishes one envelope; returns how many hub replicas received it (0: none listening)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    prefix = os.environ.get("SSEHUB_CHANNEL_PREFIX", "ssehub")
    envelope = json.dumps({"user_id": user_id, "event": event}, separators=(",", ":"))
    return r.publish(f"{prefix}:{kind}", envelope)


def main() -> None:
    user_id = sys.argv[1] if len(sys.argv) > 1 else "demo-user"
    text = sys.argv[2] if len(sys.argv) > 2 else "hello from python"
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379"))
    # The same as r.publish("ssehub:agui", json.dumps({"user_id": ..., "event": {...}})).
    receivers = publish(
        r,
        "agui",
        user_id,
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": text},
    )
    print(f"published to {receivers} hub replica(s)")


if __name__ == "__main__":
    main()
