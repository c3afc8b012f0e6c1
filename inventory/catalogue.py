"""The demo scope catalogue, shared by ``seed_demo`` and ``seed_scale`` (real deployments edit theirs in the admin)."""

from inventory.choices import ScopeCategory, Sensitivity

# name, description, sensitivity, category
DEMO_SCOPES = [
    ("tickets:read", "Read support tickets", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("docs:read", "Read the internal knowledge base", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("calendar:read", "Read team calendars", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("metrics:read", "Read service metrics", Sensitivity.LOW, ScopeCategory.INTERNAL_TOOL),
    ("tickets:write", "Create and update support tickets", Sensitivity.MEDIUM, ScopeCategory.INTERNAL_TOOL),
    ("crm:read", "Read CRM contacts (SaaS)", Sensitivity.MEDIUM, ScopeCategory.SAAS_API),
    ("mail:send", "Send e-mail on behalf of the team", Sensitivity.MEDIUM, ScopeCategory.SAAS_API),
    ("repo:read", "Read source repositories", Sensitivity.MEDIUM, ScopeCategory.SOURCE_CONTROL),
    ("repo:write", "Push to source repositories", Sensitivity.HIGH, ScopeCategory.SOURCE_CONTROL),
    ("db:prod:read", "Read production databases", Sensitivity.HIGH, ScopeCategory.PRODUCTION_DATA),
    ("payments:refund", "Issue refunds in the payments SaaS", Sensitivity.HIGH, ScopeCategory.SAAS_API),
    ("idp:admin", "Administer the identity provider", Sensitivity.HIGH, ScopeCategory.IDENTITY_ADMIN),
]
