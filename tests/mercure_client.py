"""A Mercure client library from PyPI (pymercure) against Spout.

Usage: mercure_client.py DEPS_DIR HUB_URL PUBLISHER_TOKEN
Subscribes with pymercure's Consumer, publishes two updates with its
SyncPublisher, prints {"ids": [...], "got": [...]} as JSON.
"""
import json
import sys
import threading

sys.path.insert(0, sys.argv[1])

from pymercure.consumer import Consumer  # noqa: E402
from pymercure.message import Message  # noqa: E402
from pymercure.publisher.sync import SyncPublisher  # noqa: E402

hub, token = sys.argv[2], sys.argv[3]
got = []
done = threading.Event()


def on_message(msg):
    got.append({"id": msg.message_id, "type": msg.event_type, "data": msg.data})
    if len(got) == 2:
        done.set()


consumer = Consumer(hub, ["https://example.com/books/{id}"], on_message)
consumer.daemon = True
# Returns once the hub answered with its headers: the subscription is live.
consumer.start_consumption()

publisher = SyncPublisher(hub, token)
ids = [
    publisher.publish(
        Message(
            ["https://example.com/books/1"],
            json.dumps({"title": "Dune"}),
            message_id="urn:py:1",
            event_type="book",
        )
    ),
    publisher.publish(Message(["https://example.com/books/2"], "plain text")),
]
if not done.wait(15):
    print(json.dumps({"ids": ids, "got": got, "error": "timed out"}))
    sys.exit(1)
print(json.dumps({"ids": ids, "got": got}))
