"""Tax service of the billing platform: tax rules by jurisdiction and product category,
calculations (exclusive and inclusive prices, several and compound taxes, exemptions) and
their history."""
