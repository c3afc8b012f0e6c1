"""Read serializers for the security API (the clients list and the two reports)."""

from __future__ import annotations

from rest_framework import serializers

from inventory.ceilings import Ceiling
from inventory.models import Client


class ClientSerializer(serializers.ModelSerializer):
    client_id = serializers.CharField(source="idp_client_id", read_only=True, allow_null=True)
    idp = serializers.CharField(source="idp.name", read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True, default=None)
    team = serializers.CharField(source="team.slug", read_only=True, allow_null=True, default=None)
    parent = serializers.CharField(  # type: ignore[assignment]  # a field named like Field.parent
        source="parent.registration_id", read_only=True, allow_null=True, default=None
    )
    orphaned = serializers.SerializerMethodField()
    stale = serializers.SerializerMethodField()
    approved_ceiling = serializers.SerializerMethodField(
        help_text="What the last approval granted: scopes, ttl_seconds per renewal, audiences (null: none on record)"
    )
    hold = serializers.SerializerMethodField(
        help_text="A suspension by security or an admin that only they can lift: kind, at, reason, ref (null: none)"
    )
    can_spawn = serializers.SerializerMethodField()

    class Meta:
        model = Client
        fields = [
            "registration_id",
            "client_id",
            "name",
            "state",
            "risk_tier",
            "idp",
            "owner",
            "team",
            "purpose",
            "scopes",
            "audiences",
            "internal_only",
            "auth_method",
            "created_via",
            "managed",
            "parent",
            "depth",
            "software_id",
            "software_version",
            "spiffe_id",
            "policy_version",
            "created_at",
            "activated_at",
            "expires_at",
            "ended_at",
            "last_used_at",
            "last_used_source",
            "last_synced_at",
            "sync_failed",
            "orphaned",
            "stale",
            "renewals",
            "approved_ceiling",
            "hold",
            "can_spawn",
            "children_spawned",
        ]
        read_only_fields = fields

    def get_orphaned(self, obj) -> bool:
        return obj.orphaned_at is not None

    def get_stale(self, obj) -> bool:
        return obj.stale_at is not None

    def get_approved_ceiling(self, obj) -> dict | None:
        ceiling = Ceiling.of(
            scopes=obj.ceiling_scopes, ttl_seconds=obj.ceiling_ttl_seconds, audiences=obj.ceiling_audiences
        )
        return ceiling.to_dict() if ceiling is not None else None

    def get_hold(self, obj) -> dict | None:
        if not obj.hold_kind:
            return None
        return {"kind": obj.hold_kind, "at": obj.hold_at, "reason": obj.hold_reason, "ref": obj.hold_ref}

    def get_can_spawn(self, obj) -> bool:
        return obj.spawn_revoked_at is None


class LabelCountSerializer(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    count = serializers.IntegerField()


class SprawlSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    days = serializers.IntegerField()
    totals = serializers.DictField(child=serializers.IntegerField())
    live_series = serializers.DictField(help_text="{labels: [date], values: [int]} — live clients at end of day")
    registrations = serializers.DictField(help_text="{labels, series: {outcome: [int]}, totals: {outcome: int}}")
    by_tier = LabelCountSerializer(many=True)
    by_idp = LabelCountSerializer(many=True)
    by_team = LabelCountSerializer(many=True)
    top_owners = LabelCountSerializer(many=True)
    depth = LabelCountSerializer(many=True)
    time_to_decision = serializers.DictField(child=serializers.FloatField(allow_null=True))
    auto_approval_ratio = serializers.FloatField(allow_null=True)
    expiry_overshoot_p99 = serializers.FloatField(allow_null=True)


class ControlResultSerializer(serializers.Serializer):
    key = serializers.CharField(source="control.key")
    name = serializers.CharField(source="control.name")
    status = serializers.ChoiceField(choices=["pass", "partial", "fail"])
    total = serializers.IntegerField()
    failing = serializers.IntegerField()
    percent = serializers.FloatField(allow_null=True)
    sentence = serializers.CharField()
    drill_down = serializers.CharField(allow_null=True)
    items = serializers.ListField(child=serializers.CharField(), source="control.items")


class ItemCoverageSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=["pass", "partial", "fail", "not_assessed"])
    controls = serializers.SerializerMethodField()
    evidence_total = serializers.IntegerField()
    evidence_failing = serializers.IntegerField()

    def get_controls(self, obj) -> list[str]:
        return [r.control.key for r in obj.controls]


class FrameworkSerializer(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    summary = serializers.DictField(child=serializers.IntegerField())
    items = ItemCoverageSerializer(many=True)


class FrameworkReportSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    controls = ControlResultSerializer(many=True)
    frameworks = FrameworkSerializer(many=True)


class ComplianceIssueSerializer(serializers.Serializer):
    rule = serializers.CharField()
    since = serializers.DateTimeField()
    flagged_at = serializers.DateTimeField()
    action = serializers.CharField()
    action_due_at = serializers.DateTimeField()
    acted_at = serializers.DateTimeField(allow_null=True)
    monitor_only = serializers.BooleanField()
    lifecycle_policy_version = serializers.IntegerField()
    what_happens = serializers.CharField()


class AttestSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)
