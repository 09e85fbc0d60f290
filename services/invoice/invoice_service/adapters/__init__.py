"""Adapters: SQL tables and repositories, peer-service clients, HTML and PDF rendering."""
