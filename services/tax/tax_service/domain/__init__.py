"""Pure tax rules: no framework, database or I/O."""
