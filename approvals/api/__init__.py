"""Management API for registration requests (/api/v1/requests/)."""
