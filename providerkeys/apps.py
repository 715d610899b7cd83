from django.apps import AppConfig


class ProviderKeysConfig(AppConfig):
    name = "providerkeys"
    verbose_name = "Provider keys (BYOK)"
