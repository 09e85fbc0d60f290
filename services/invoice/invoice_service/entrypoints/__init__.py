"""HTTP API and event subscriptions of the invoice service."""
