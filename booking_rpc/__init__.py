"""booking-rpc: the Booking microservice, speaking the NestJS TCP transport."""

__version__ = "0.1.0"
