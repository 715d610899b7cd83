from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from voicecalls.errors import error_responses
from voicecalls.pagination import PagePagination
from voicecalls.routing import UUID_PATTERN
from voicecalls.throttling import OrganizationCreateThrottle, WorkflowWriteThrottle
from workflows import selectors, services
from workflows.filters import WorkflowFilter
from workflows.models import Workflow
from workflows.serializers import (
    WorkflowSerializer,
    WorkflowVersionSerializer,
    WorkflowWriteSerializer,
)

_WRITE_RATE = (
    "Each write counts against the organization's workflow write rate (60 a minute "
    "unless the platform sets another): 429 with `Retry-After` beyond it."
)


@extend_schema_view(
    list=extend_schema(
        summary="List workflows",
        operation_id="workflows_list",
        description="Your organization's workflows, paginated like calls.",
    ),
    retrieve=extend_schema(
        summary="Get workflow",
        operation_id="workflows_retrieve",
        description="A workflow's current version: agents, prompts, tools and settings.",
    ),
    create=extend_schema(
        summary="Create workflow",
        operation_id="workflows_create",
        description=(
            "Templates, handoffs and providers are checked now: a mistake is a 400. " + _WRITE_RATE
        ),
        request=WorkflowWriteSerializer,
        responses={201: WorkflowSerializer},
    ),
    update=extend_schema(
        summary="Replace workflow (new version)",
        operation_id="workflows_update",
        description=(
            "Saves a new version; calls already made keep the version they started with. "
            + _WRITE_RATE
        ),
        request=WorkflowWriteSerializer,
        responses={200: WorkflowSerializer},
    ),
    partial_update=extend_schema(
        summary="Update workflow fields (new version)",
        operation_id="workflows_partial_update",
        description=(
            "Top-level fields given replace the current ones (`settings` merges key by "
            "key); the result is validated as a whole. " + _WRITE_RATE
        ),
        request=WorkflowWriteSerializer(partial=True),
        responses={200: WorkflowSerializer},
    ),
    destroy=extend_schema(
        summary="Delete workflow",
        operation_id="workflows_destroy",
        description=(
            "Soft delete: the workflow answers 404 from now on and its slug is free "
            "again; calls already made keep their workflow version and keep working. 409 "
            "`workflow_in_use` while inbound phone numbers reach it."
        ),
        responses={204: None, **error_responses(409)},
    ),
)
class WorkflowViewSet(viewsets.GenericViewSet):
    throttle_classes = [OrganizationCreateThrottle, WorkflowWriteThrottle]
    lookup_value_regex = UUID_PATTERN
    filterset_class = WorkflowFilter
    pagination_class = PagePagination
    serializer_class = WorkflowSerializer
    queryset = Workflow.objects.none()  # for schema generation; real reads are scoped below

    def get_queryset(self):
        return selectors.workflow_queryset(organization=self.request.user.organization)

    def _get_workflow(self) -> Workflow:
        return get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])

    def list(self, request: Request) -> Response:
        workflows = self.filter_queryset(
            selectors.workflow_list(organization=request.user.organization)
        )
        page = self.paginate_queryset(workflows)
        return self.get_paginated_response(WorkflowSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(WorkflowSerializer(self._get_workflow()).data)

    # Create and update hand the body over whole: the service validates it, once (its
    # templates are the expensive part), with slug and name taken from it.
    def create(self, request: Request) -> Response:
        workflow = services.workflow_create(
            organization=request.user.organization, definition=request.data
        )
        return Response(WorkflowSerializer(workflow).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str) -> Response:
        workflow = services.workflow_update(workflow=self._get_workflow(), definition=request.data)
        return Response(WorkflowSerializer(workflow).data)

    def partial_update(self, request: Request, pk: str) -> Response:
        workflow = services.workflow_patch(workflow=self._get_workflow(), changes=request.data)
        return Response(WorkflowSerializer(workflow).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.workflow_delete(workflow=self._get_workflow())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="List workflow versions",
        operation_id="workflows_versions",
        description="Every saved version of the workflow, newest first.",
        responses={200: WorkflowVersionSerializer(many=True)},
        filters=False,
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def versions(self, request: Request, pk: str) -> Response:
        versions = selectors.workflow_versions(workflow=self._get_workflow())
        page = self.paginate_queryset(versions)
        return self.get_paginated_response(WorkflowVersionSerializer(page, many=True).data)
