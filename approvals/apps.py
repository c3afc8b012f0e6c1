from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals.inventory_hooks import register

        register()  # inventory triggers approvals only through these hooks (inventory.hooks)
