"""The RFC 7591/7592 endpoints (``/oauth2/register``): thin JSON views over ``approvals.intake``."""
