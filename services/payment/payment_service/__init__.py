"""Payment service: idempotent payments and refunds behind a gateway port, signed webhooks."""
