"""Pure invoice rules: no framework, database or network imports."""
