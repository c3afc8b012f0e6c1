from inventory import sweep_tasks  # noqa: F401
