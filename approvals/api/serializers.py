"""Requests API serializers: output shapes and decision inputs (parsing only; rules live in services)."""

from __future__ import annotations

from rest_framework import serializers

from approvals.choices import PolicyOutcome
from approvals.models import Decision, RegistrationRequest


class DecisionSerializer(serializers.ModelSerializer):
    approver = serializers.CharField(source="approver.username", read_only=True)

    class Meta:
        model = Decision
        fields = ["approver", "kind", "reason", "granted_scopes", "granted_ttl", "created_at"]
        read_only_fields = fields


class RegistrationRequestSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)
    team = serializers.CharField(source="team.name", read_only=True, default=None)
    idp = serializers.CharField(source="idp.name", read_only=True, default=None)
    client_id = serializers.SerializerMethodField(help_text="Registration id of the client it became, if any")
    approvals_so_far = serializers.IntegerField(read_only=True)
    decisions = DecisionSerializer(many=True, read_only=True)
    # Blank until the policy has run: said here, or the schema's enum would leave "" out.
    risk_tier = serializers.ChoiceField(
        choices=list(RegistrationRequest._meta.get_field("risk_tier").flatchoices), allow_blank=True, read_only=True
    )
    outcome = serializers.ChoiceField(choices=PolicyOutcome.choices, allow_blank=True, read_only=True)

    class Meta:
        model = RegistrationRequest
        fields = [
            "id",
            "kind",
            "state",
            "via",
            "client_name",
            "software_id",
            "purpose",
            "owner",
            "team",
            "idp",
            "requested_scopes",
            "requested_ttl",
            "granted_scopes",
            "granted_ttl",
            "audiences",
            "internal_only",
            "risk_tier",
            "outcome",
            "reasons",
            "policy_version",
            "approvals_needed",
            "approvals_so_far",
            "decisions",
            "client_id",
            "created_at",
            "decided_at",
            "decision_reason",
        ]
        read_only_fields = fields

    def get_client_id(self, obj) -> str | None:
        return obj.public_id if obj.client_id else None


class ApproveInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, default="", help_text="Required for high-risk requests"
    )
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Narrow the grant to these scopes (a subset of what is granted so far)",
    )
    ttl_seconds = serializers.IntegerField(
        required=False, min_value=1, help_text="Shorten the client's lifetime (never longer than granted)"
    )


class DenyInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=True, allow_blank=False, max_length=2000)
