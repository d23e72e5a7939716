"""The way in and out: the broker link (``mqtt``, the only module that imports paho),
message types without paho, topics, payloads, replies, the outbox and its delivery."""
