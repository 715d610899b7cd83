"""What several admin change pages share."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect


class ReadAtForm(forms.Form):
    """A change page carrying when it was read (the row's `updated_at`): a save over a
    change made since (an API PATCH, a worker) is refused instead of writing what the
    page held over it. Mixed into a ModelForm whose model has `updated_at`."""

    read_at = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance._state.adding and "read_at" in self.fields:
            self.fields["read_at"].initial = self.instance.updated_at.isoformat()

    def clean(self) -> dict:
        cleaned = super().clean()
        read_at = cleaned.get("read_at")
        if not self.instance._state.adding and read_at != self.instance.updated_at.isoformat():
            raise forms.ValidationError(self.changed_since_read())
        return cleaned

    def changed_since_read(self) -> str:
        """Why the save is refused."""
        name = self.instance._meta.verbose_name
        return (
            f"This {name} changed since this page was read: reload the page and make the "
            "change again."
        )


class SaveRefused(Exception):
    """A service refused an admin save the form had validated: another request won a
    race in between (the same slug created, the row deleted)."""


class SaveRefusedAsMessage:
    """Mixed into a ModelAdmin whose `save_model` raises SaveRefused: the page comes
    back with the reason as an error message, instead of a 500. The save's transaction
    was rolled back (Django wraps the change view in one)."""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except SaveRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
