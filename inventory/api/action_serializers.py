"""Inputs and outputs of the state-changing inventory API (parsing only: the rules live in the services)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from inventory.api.serializers import ClientSerializer
from inventory.breakglass import ACTIONS as BREAK_GLASS_ACTIONS
from inventory.forms import BreakGlassForm
from inventory.keys import KeySetError, validate_public_jwks
from inventory.models import ClientSponsor, OutboxEntry, TransferOffer

REASON_MAX = 500


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=REASON_MAX, default="", help_text="Kept in the audit log"
    )


class RequiredReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=REASON_MAX, help_text="Required: shown to the owner and kept in the audit log"
    )  # CharField trims whitespace, so a blank reason is refused as blank


class RotateKeySerializer(serializers.Serializer):
    jwks = serializers.JSONField(
        help_text='The new public JSON Web Key Set, `{"keys": [...]}` (an object, or its JSON text). '
        "Public keys only: private members are refused."
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=REASON_MAX, default="")

    def validate_jwks(self, value):
        try:
            return validate_public_jwks(value)  # the registration path's rules, in one place
        except KeySetError as refused:
            raise serializers.ValidationError(refused.problems) from refused


def _active_person(username: str):
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise serializers.ValidationError("No person with that username.")
    if not user.is_active:
        raise serializers.ValidationError("That person is not active.")
    return user


class TransferInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="The new owner's username")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=REASON_MAX, default="")

    def validate_username(self, value):
        return _active_person(value)


class SponsorInviteSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150, help_text="The person invited to co-sponsor")


class BreakGlassPreviewInputSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=[value for value, _ in BreakGlassForm.SCOPES])
    value = serializers.CharField(
        max_length=200,
        help_text="Username, team slug, IdP name, registration id, token prefix or id, issuer id or policy version",
    )
    action = serializers.ChoiceField(choices=sorted(BREAK_GLASS_ACTIONS))


class BreakGlassInputSerializer(BreakGlassPreviewInputSerializer):
    reason = serializers.CharField(max_length=REASON_MAX)


class BreakGlassPreviewSerializer(serializers.Serializer):
    scope = serializers.CharField()
    value = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    action = serializers.CharField()
    by_state = serializers.DictField(child=serializers.IntegerField(), help_text="Live clients in scope by state")
    matched = serializers.IntegerField(help_text="Live clients the scope names directly")
    descendants = serializers.IntegerField(help_text="Live descendants included because an ancestor is in scope")
    already_held = serializers.IntegerField()
    effects = serializers.ListField(child=serializers.CharField(), help_text="Beyond the clients: token, issuer, …")


class BreakGlassOutcomeSerializer(serializers.Serializer):
    decision_id = serializers.CharField(help_text="Names the decision in the audit log and on each hold")
    action = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    count = serializers.IntegerField(help_text="Clients suspended or retired, descendants included")
    held = serializers.SerializerMethodField(help_text="Clients already suspended that are now held")
    effects = serializers.ListField(child=serializers.CharField())

    def get_held(self, obj) -> int:
        return len(obj.held)


class RenewResultSerializer(serializers.Serializer):
    renewed = serializers.BooleanField(help_text="Renewed now, inside the approved ceiling")
    needs_review = serializers.BooleanField(help_text="Filed as a renewal request for approvers instead")
    request_id = serializers.CharField(allow_null=True, help_text="The renewal request (/api/v1/requests/<id>/)")
    review_reasons = serializers.ListField(child=serializers.CharField())
    client = ClientSerializer()


class HoldLiftResultSerializer(serializers.Serializer):
    lifted = serializers.ListField(child=serializers.CharField(), help_text="Registration ids whose hold was lifted")
    resumed = serializers.ListField(child=serializers.CharField(), help_text="Of those, the ones resumed")
    still_suspended = serializers.DictField(
        child=serializers.CharField(), help_text="Registration id → why it stays suspended"
    )
    client = ClientSerializer()


class TransferOfferSerializer(serializers.ModelSerializer):
    client = serializers.CharField(source="client.registration_id", read_only=True)
    client_name = serializers.CharField(source="client.name", read_only=True)
    from_user = serializers.CharField(source="from_user.username", read_only=True, allow_null=True, default=None)
    to_user = serializers.CharField(source="to_user.username", read_only=True)
    offered_by = serializers.CharField(source="offered_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = TransferOffer
        fields = ["id", "client", "client_name", "from_user", "to_user", "offered_by", "state", "reason"]
        fields += ["created_at", "decided_at"]
        read_only_fields = fields


class SponsorshipSerializer(serializers.ModelSerializer):
    client = serializers.CharField(source="client.registration_id", read_only=True)
    client_name = serializers.CharField(source="client.name", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True)
    invited_by = serializers.CharField(source="invited_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = ClientSponsor
        fields = ["id", "client", "client_name", "user", "invited_by", "state", "created_at", "decided_at"]
        read_only_fields = fields


class SyncFailureSerializer(serializers.ModelSerializer):
    client = serializers.CharField(source="client.registration_id", read_only=True)
    client_name = serializers.CharField(source="client.name", read_only=True)
    idp = serializers.CharField(source="idp.name", read_only=True)
    error = serializers.CharField(read_only=True, help_text="The last error, any IdP secret censored")
    hint = serializers.CharField(read_only=True, help_text="What a person should do about it, if known")
    resolvable = serializers.BooleanField(read_only=True, help_text="A disable or delete: may be marked resolved")

    class Meta:
        model = OutboxEntry
        fields = ["id", "client", "client_name", "idp", "operation", "status", "attempts", "next_attempt_at"]
        fields += ["error", "hint", "resolvable", "created_at"]
        read_only_fields = fields
