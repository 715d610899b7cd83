from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.models import Call
from calls.selectors import agent_call_queryset, call_queryset
from calls.serializers import CallSerializer
from calls.views import call_detail_data
from telephony import selectors, services
from telephony.guard import OutboundRateReached
from telephony.serializers import (
    AgentCallTransferResultSerializer,
    AgentCallTransferSerializer,
    CallTransferSerializer,
    PhoneNumberCreateSerializer,
    PhoneNumberListSerializer,
    PhoneNumberSerializer,
    PhoneNumberUpdateSerializer,
    SipTrunkCreateSerializer,
    SipTrunkListSerializer,
    SipTrunkSerializer,
)
from telephony.transfer import call_transfer
from voicecalls.auth import IsAgentKey
from voicecalls.errors import BadGateway, LimitErrorResponseSerializer, error_responses
from voicecalls.livekit import LiveKitError
from voicecalls.livekit_sip import SipTransferError

ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Trunk ID.")
CALL_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Call ID.")


class SipTrunkListView(APIView):
    @extend_schema(
        summary="List SIP trunks",
        description="Your SIP trunks, newest first (passwords are never shown).",
        operation_id="sip_trunks_list",
        responses={200: SipTrunkListSerializer},
        tags=["telephony"],
    )
    def get(self, request: Request) -> Response:
        trunks = selectors.sip_trunk_queryset(organization=request.user.organization)
        return Response({"items": SipTrunkSerializer(trunks, many=True).data})

    @extend_schema(
        summary="Create SIP trunk",
        description="Add your carrier's SIP trunk. It is created in LiveKit first; if "
        "LiveKit refuses it or is unreachable the answer is 502 and nothing is stored. "
        "The password is stored encrypted and never shown again.",
        operation_id="sip_trunks_create",
        request=SipTrunkCreateSerializer,
        responses={201: SipTrunkSerializer, **error_responses(413, 502)},
        tags=["telephony"],
    )
    def post(self, request: Request) -> Response:
        params = SipTrunkCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            trunk = services.sip_trunk_create(
                organization=request.user.organization, **params.validated_data
            )
        except LiveKitError as exc:
            raise BadGateway("LiveKit could not create the trunk; nothing was stored.") from exc
        return Response(SipTrunkSerializer(trunk).data, status=status.HTTP_201_CREATED)


class SipTrunkDetailView(APIView):
    def _get(self, request: Request, pk: str):
        queryset = selectors.sip_trunk_queryset(organization=request.user.organization)
        return get_object_or_404(queryset, pk=pk)

    @extend_schema(
        summary="Get SIP trunk",
        operation_id="sip_trunks_retrieve",
        parameters=[ID],
        responses={200: SipTrunkSerializer},
        tags=["telephony"],
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(SipTrunkSerializer(self._get(request, pk)).data)

    @extend_schema(
        summary="Delete SIP trunk",
        description="Delete the trunk in LiveKit and here; 502 (and the trunk kept) when "
        "LiveKit fails. 409 `trunk_in_use` while phone numbers use it.",
        operation_id="sip_trunks_destroy",
        parameters=[ID],
        responses={204: None, **error_responses(409, 502)},
        tags=["telephony"],
    )
    def delete(self, request: Request, pk: str) -> Response:
        trunk = self._get(request, pk)
        try:
            services.sip_trunk_delete(trunk=trunk)
        except LiveKitError as exc:
            raise BadGateway("LiveKit could not delete the trunk; it is kept.") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


NUMBER_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Phone number ID."
)


class PhoneNumberListView(APIView):
    @extend_schema(
        summary="List phone numbers",
        description="Your inbound numbers and the workflows they reach, newest first.",
        operation_id="phone_numbers_list",
        responses={200: PhoneNumberListSerializer},
        tags=["telephony"],
    )
    def get(self, request: Request) -> Response:
        numbers = selectors.phone_number_queryset(organization=request.user.organization)
        return Response({"items": PhoneNumberSerializer(numbers, many=True).data})

    @extend_schema(
        summary="Create phone number",
        description="Map a number of one of your inbound trunks to a workflow. It stays "
        "`unverified`, and no call reaches it, until staff verify it; then callers "
        "dialing it talk to the workflow's agent. A number belongs to one account only.",
        operation_id="phone_numbers_create",
        request=PhoneNumberCreateSerializer,
        responses={201: PhoneNumberSerializer, **error_responses(413)},
        tags=["telephony"],
    )
    def post(self, request: Request) -> Response:
        params = PhoneNumberCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        number = services.phone_number_create(
            organization=request.user.organization, **params.validated_data
        )
        return Response(PhoneNumberSerializer(number).data, status=status.HTTP_201_CREATED)


class PhoneNumberDetailView(APIView):
    def _get(self, request: Request, pk: str):
        queryset = selectors.phone_number_queryset(organization=request.user.organization)
        return get_object_or_404(queryset, pk=pk)

    @extend_schema(
        summary="Get phone number",
        operation_id="phone_numbers_retrieve",
        parameters=[NUMBER_ID],
        responses={200: PhoneNumberSerializer},
        tags=["telephony"],
    )
    def get(self, request: Request, pk: str) -> Response:
        return Response(PhoneNumberSerializer(self._get(request, pk)).data)

    @extend_schema(
        summary="Update phone number",
        description="Point the number at another workflow: calls in progress keep theirs, "
        "the next caller reaches the new one. The number and its trunk do not change "
        "(sent back as they are, they are ignored; any other value is a 400).",
        operation_id="phone_numbers_partial_update",
        parameters=[NUMBER_ID],
        request=PhoneNumberUpdateSerializer,
        responses={200: PhoneNumberSerializer},
        tags=["telephony"],
    )
    def patch(self, request: Request, pk: str) -> Response:
        phone_number = self._get(request, pk)
        params = PhoneNumberUpdateSerializer(
            data=request.data, context={"phone_number": phone_number}
        )
        params.is_valid(raise_exception=True)
        number = services.phone_number_update(phone_number=phone_number, **params.validated_data)
        return Response(PhoneNumberSerializer(number).data)

    @extend_schema(
        summary="Delete phone number",
        description="Delete the number and its LiveKit dispatch rule: no new call reaches "
        "it. 502 (and the number kept) when LiveKit fails.",
        operation_id="phone_numbers_destroy",
        parameters=[NUMBER_ID],
        responses={204: None, **error_responses(502)},
        tags=["telephony"],
    )
    def delete(self, request: Request, pk: str) -> Response:
        number = self._get(request, pk)
        try:
            services.phone_number_delete(phone_number=number)
        except LiveKitError as exc:
            raise BadGateway("LiveKit could not delete the number's rule; it is kept.") from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


def _transfer(call: Call, destination: str, tool: str | None = None) -> Call:
    try:
        return call_transfer(call=call, destination=destination, tool=tool)
    except SipTransferError as exc:
        raise BadGateway(
            f"The destination did not take the call ({exc}); the caller is still on the line.",
            code="transfer_failed",
        ) from exc
    except LiveKitError as exc:
        raise BadGateway("LiveKit could not transfer the call; it is unchanged.") from exc


TRANSFER_ERRORS = {
    **error_responses(409, 502),
    429: OpenApiResponse(
        LimitErrorResponseSerializer,
        description="`outbound_rate_limited`: a transfer to a number counts as a phone call "
        "against the organization's calls per minute and per day, and this one is over "
        "either (`meta`: which, and its value); the call is unchanged. Wait `Retry-After` "
        "seconds.",
        examples=[
            OpenApiExample(
                "Daily cap reached",
                value={
                    "type": "client_error",
                    "errors": [
                        {
                            "code": OutboundRateReached.code,
                            "detail": OutboundRateReached.detail,
                            "attr": None,
                        }
                    ],
                    "meta": {"limit": "outbound_calls_per_day", "outbound_calls_per_day": 200},
                },
            )
        ],
    ),
}


class CallTransferView(APIView):
    @extend_schema(
        summary="Transfer a phone call",
        description="Hand a live phone call's caller to a person: a cold transfer to a "
        "destination listed in a `transfer` tool of the call's workflow version, through "
        "the toll-fraud guard. The call ends `completed` with `end_reason` `transferred` "
        "and `transfer_destination`. A web call, an ended call or one not answered yet is "
        "409; LiveKit failing, or the destination not taking the call, is 502 and the "
        "call goes on unchanged.",
        operation_id="calls_transfer",
        parameters=[CALL_ID],
        request=CallTransferSerializer,
        responses={200: CallSerializer, **TRANSFER_ERRORS},
        tags=["calls"],
    )
    def post(self, request: Request, pk: str) -> Response:
        params = CallTransferSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        queryset = call_queryset(organization=request.user.organization).select_related(
            "organization", "workflow_version"
        )
        call = get_object_or_404(queryset, pk=pk)
        call = _transfer(call, params.validated_data["destination"])
        return Response(call_detail_data(call))


class AgentCallTransferView(APIView):
    permission_classes = [IsAgentKey]

    @extend_schema(
        summary="Transfer a phone call (agent)",
        description="The agent's transfer tool: `destination` must be listed in the tool "
        "`tool` of the call's workflow version (400 otherwise); then as "
        "`POST /calls/{id}/transfer`. 403 `organization_suspended` when staff suspended "
        "the call's organization: the call goes on, untransferred.",
        operation_id="agent_calls_transfer",
        request=AgentCallTransferSerializer,
        responses={200: AgentCallTransferResultSerializer, **TRANSFER_ERRORS},
    )
    def post(self, request: Request, call_id: str) -> Response:
        params = AgentCallTransferSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        queryset = agent_call_queryset(organization=request.user.organization).select_related(
            "organization", "workflow_version"
        )
        call = get_object_or_404(queryset, pk=call_id)
        call = _transfer(call, params.validated_data["destination"], params.validated_data["tool"])
        return Response(
            {
                "call_id": call.pk,
                "status": call.status,
                "end_reason": call.end_reason,
                "transfer_destination": call.transfer_destination,
            }
        )
