from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals import metrics
        from approvals.inventory_hooks import register
        from approvals.policy_store import active_policy
        from inventory.quotas import owner_limit_source_register

        register()  # inventory triggers approvals only through these hooks (inventory.hooks)
        # The owner quota is enforced by inventory (where clients become live); the figure is this app's policy.
        owner_limit_source_register(lambda: active_policy().max_live_clients_per_owner)
        metrics.register()  # /metrics figures
