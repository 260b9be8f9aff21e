"""The transports: TCP (asyncio Protocol, flow control, limits, graceful shutdown) and NATS."""
