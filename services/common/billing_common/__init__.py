"""Shared kernel of the billing platform: money, events, ports and their generic adapters,
outbox/inbox, auth, problem details, logging, settings."""

__version__ = "0.1.0"
