"""Invoice service: invoices built from tax and discount quotes, gapless numbering per series,
a checked status machine with history, payments applied from events, PDF rendering."""

__version__ = "0.1.0"
