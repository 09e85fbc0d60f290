"""Use cases of the invoice service and the ports they depend on."""
