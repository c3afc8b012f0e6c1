"""Inventory HTML views: ``security`` (inventory, explain, dashboard, reports) and ``owner`` (my clients)."""
