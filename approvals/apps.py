from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals import inventory_hooks, metrics, portal_hooks
        from approvals.unauthorized import sweep_unauthorized
        from inventory.sweeps import sweep_register

        inventory_hooks.register()  # inventory reaches approvals only through these hooks (inventory.hooks)
        portal_hooks.register()  # home tiles and the review queue badge (portal.home, portal.context_processors)
        sweep_register("unauthorized", sweep_unauthorized)
        metrics.register()  # /metrics figures
