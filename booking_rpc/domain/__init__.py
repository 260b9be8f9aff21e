"""Pure booking rules (no I/O): money, refunds, state machines, slot generation."""
