from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals import counts, inventory_hooks, metrics, portal_hooks

        inventory_hooks.register()  # inventory reaches approvals only through these hooks (inventory.hooks)
        portal_hooks.register()  # home tiles and the review queue badge (portal.home, portal.context_processors)
        metrics.register()  # /metrics figures
        counts.register()  # the requests' counts fold, reconcile and rebuild with the clients' (inventory.counts)
        from approvals.oauth2.cache import invalidate_on_save

        invalidate_on_save()  # an admin's change to an IdP, an anonymous profile or a scope is seen at once
        from approvals.conditions import approval_window

        approval_window()  # a malformed REGISTRAR_HIGH_RISK_APPROVAL_WINDOW stops start-up, naming the problem
