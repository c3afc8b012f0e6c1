from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals.unauthorized import sweep_unauthorized
        from inventory.sweeps import sweep_register

        sweep_register("unauthorized", sweep_unauthorized)
