from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    verbose_name = "Inventory"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from inventory import metrics
        from inventory.leavers import connect_signals
        from inventory.search_index import ensure_after_migrate
        from inventory.selectors import configure_search_session, home_tiles
        from portal.home import home_tiles_register

        connect_signals()
        home_tiles_register("inventory", home_tiles)
        metrics.register()  # /metrics figures and /readyz checks
        connection_created.connect(configure_search_session, dispatch_uid="inventory.search_session")
        # SQLite rebuilds a table to alter it, dropping its triggers: put the search index's back after migrate.
        post_migrate.connect(ensure_after_migrate, sender=self, dispatch_uid="inventory.sqlite_fts")
