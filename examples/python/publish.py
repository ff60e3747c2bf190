#!/usr/bin/env python3
"""Publish an event to one user's ssehub streams through Redis (7.0 or later).

    r.fcall("ssehub_publish", 2, *user_keys(user_id), kind, json.dumps(event))  # -> the event's id

    pip install redis
    python3 publish.py demo-user "hello from python"

The hub loads the ssehub_publish function into Redis when it connects. It gives the event the
user's next id, keeps it in the user's history (browsers that reconnect with Last-Event-ID get
what they missed) and delivers it, in one step. REDIS_URL (default redis://localhost:6379) and
SSEHUB_CHANNEL_PREFIX (default ssehub) must match the hub's settings.
"""
import json
import os
import sys

import redis

KINDS = ("agui", "a2a", "system", "analytics")


def user_keys(user_id: str) -> list:
    """The user's two keys: one hash tag per user (%, { and } percent-encoded), one cluster slot."""
    prefix = os.environ.get("SSEHUB_CHANNEL_PREFIX", "ssehub")
    tag = user_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return [f"{prefix}:{{{tag}}}:m", f"{prefix}:{{{tag}}}:h"]


def publish(r: "redis.Redis", kind: str, user_id: str, event: dict) -> str:
    """Publishes one event; returns its id, <epoch>:<ms>-<seq>. Redis refuses bad events (ERR ssehub: ...)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    event_id = r.fcall("ssehub_publish", 2, *user_keys(user_id), kind, json.dumps(event, separators=(",", ":")))
    return event_id.decode() if isinstance(event_id, bytes) else event_id


def main() -> None:
    user_id = sys.argv[1] if len(sys.argv) > 1 else "demo-user"
    text = sys.argv[2] if len(sys.argv) > 2 else "hello from python"
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379"))
    event_id = publish(
        r,
        "agui",
        user_id,
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1", "delta": text},
    )
    print(f"published {event_id}")


if __name__ == "__main__":
    main()
