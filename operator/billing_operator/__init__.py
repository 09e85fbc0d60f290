"""Kopf operator reconciling TaxRule and DiscountPolicy resources into the billing services."""
