"""Use cases of the tax service, each one transaction through a unit of work."""
