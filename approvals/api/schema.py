"""OpenAPI description of the API token scheme, so drf-spectacular documents ``Authorization: Token``.

Imported by approvals.api.views. It describes portal's authenticator and could live in portal/api;
it sits here because this is the first API module, and registering it twice would be harmless.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <api token>` (create one with `manage.py create_api_token`)",
        }
