"""Inventory HTML views, one module per audience (owner.py: owners' own clients; security.py: inventory)."""
