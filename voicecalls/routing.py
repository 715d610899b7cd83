"""URL pieces shared by every app's router."""

# A uuid path segment: anything else matches no route, so it is a plain 404.
UUID_PATTERN = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
