"""The RFC 7591/7592 endpoints (``/oauth2/register``): ``views`` (HTTP) over ``credentials``, ``register``,
``client_config`` and ``responses`` (the services), with ``credential_use`` (the once-only writes), ``errors``,
``client_keys``, ``inline_delivery``, ``cache`` and ``storable`` beside them. A registration's path, from the view
to the IdP, is traced in docs/architecture.md."""
