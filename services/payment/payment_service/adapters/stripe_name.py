"""The Stripe gateway's name, importable without the Stripe SDK: the SDK (with httpx, about
11 MB of resident memory) is loaded only when a stripe-api-key is configured."""

from __future__ import annotations

STRIPE = "stripe"
