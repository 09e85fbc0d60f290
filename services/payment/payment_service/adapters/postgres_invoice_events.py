"""PostgreSQL's one statement for the event every invoice sends this service first: claim
`invoice.created` in the inbox and store the new payable invoice, at once.

Through the session it was a BEGIN, the claim, a locking SELECT, the ORM's INSERT and a
COMMIT: five round trips and most of this service's CPU per invoice. Here it is one
autocommitted statement, and only for the case it covers exactly: an invoice not known
here yet and an event not claimed yet. Anything else (a redelivery, an invoice a later
event made known first, a replica inserting it at the same moment) writes nothing and is
left to the unit of work's general path, which decides it as before."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy import Table

from billing_common.db import PostgresDriver
from billing_common.outbox import InboxRecord
from payment_service.adapters.orm import PayableInvoiceRow
from payment_service.domain.model import PayableInvoice

_INBOX: Table = InboxRecord.__table__  # type: ignore[attr-defined]
_INVOICES: Table = PayableInvoiceRow.__table__  # type: ignore[attr-defined]

# The claim is made only while the invoice is unknown, and the invoice is inserted only
# from the claim's row: both or neither. The invoice's INSERT has no ON CONFLICT, so a
# replica that inserted the same invoice meanwhile fails the whole statement (nothing kept)
# rather than leaving a claim without its effect. PostgreSQL types the parameters from the
# columns they are compared with or go into.
_CREATED_SQL = (
    f"WITH claimed AS (INSERT INTO {_INBOX.name} (consumer, event_id, event_type, processed_at)"  # noqa: S608
    " SELECT $1, $2, $3, $4"
    f" WHERE NOT EXISTS (SELECT 1 FROM {_INVOICES.name} WHERE tenant_id = $5 AND invoice_id = $6)"
    " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id)"
    f" INSERT INTO {_INVOICES.name} (tenant_id, invoice_id, state, customer_id, currency, total,"
    " amount_due, number, invoice_version, created_at, updated_at)"
    " SELECT $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM claimed"
    " RETURNING invoice_id"
)


async def claim_new_invoice(
    driver: PostgresDriver, claim: dict[str, Any], tenant: str, invoice: PayableInvoice
) -> bool:
    """Claim the event (`claim`: its inbox row) and insert `invoice`, new, committed together;
    False, with nothing written, unless both could be."""
    try:
        found = await driver.fetchrow(
            _CREATED_SQL,
            claim["consumer"],
            claim["event_id"],
            claim["event_type"],
            claim["processed_at"],
            tenant,
            invoice.invoice_id,
            str(invoice.state),
            invoice.customer_id,
            invoice.currency,
            invoice.total,
            invoice.amount_due,
            invoice.number,
            invoice.version,
            invoice.created_at,
            invoice.updated_at,
        )
    except asyncpg.UniqueViolationError:
        return False  # inserted by another delivery meanwhile: the general path decides
    return found is not None
