"""Django REST framework's settings and drf-standardized-errors' (the one error envelope),
imported by voicecalls.settings: plain dicts, no Django import, so settings can load them
first."""

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["voicecalls.auth.APIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["voicecalls.auth.IsClientKey"],
    "DEFAULT_PARSER_CLASSES": ["voicecalls.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The API speaks JSON only: `?format=xml` made a path that exists answer 404 "Not
    # found." before its view ran. The schema alone reads it (voicecalls.schema).
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "voicecalls.schema.AutoSchema",
    "DEFAULT_METADATA_CLASS": "voicecalls.metadata.EndpointMetadata",
    "EXCEPTION_HANDLER": "drf_standardized_errors.handler.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["voicecalls.throttling.OrganizationCreateThrottle"],
    "UNAUTHENTICATED_USER": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

DRF_STANDARDIZED_ERRORS = {
    "ENABLE_IN_DEBUG_FOR_UNHANDLED_EXCEPTIONS": True,
    # Codes documented wherever they apply (voicecalls.schema.AutoSchema decides;
    # 503, the database unavailable: every view that reads it);
    # 409/422/502 are documented per operation (voicecalls.errors.error_responses).
    "ALLOWED_ERROR_STATUS_CODES": [
        "400",
        "401",
        "403",
        "404",
        "405",
        "406",
        "413",
        "415",
        "429",
        "500",
        "503",
    ],
    # Errors may carry a top-level `meta` (429 limits: the numbers a client needs).
    "EXCEPTION_FORMATTER_CLASS": "voicecalls.errors.ExceptionFormatter",
    # Services' own limits (voicecalls.errors.LimitExceeded) become 429s.
    "EXCEPTION_HANDLER_CLASS": "voicecalls.errors.ExceptionHandler",
}
