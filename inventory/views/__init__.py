"""HTML views of the inventory, one module per area (views are thin: selectors read, services write)."""
