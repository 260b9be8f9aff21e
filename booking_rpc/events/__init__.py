"""Events: outbox writes, the relay to subscribers, consumed-event handling."""
