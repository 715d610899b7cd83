"""Step 3 of a key rotation (docs/key-rotation.md): every secret stored under a fallback
of CRYPTOGRAPHY_KEY written again under the current one.

The columns are found by their type (every model's `EncryptedSecretField`), so a secret
column added later is never left under an old key: provider keys, webhook signing
secrets, SIP trunk passwords, recording storage credentials, erasure records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.apps import apps
from django.db import models, transaction
from django.db.models.functions import Cast

from providerkeys import crypto
from providerkeys.fields import EncryptedSecretField

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnReencrypted:
    """One secret column: how many values it holds, how many were under a fallback key."""

    model: type[models.Model]
    field: str
    total: int
    under_fallback: int


def encrypted_columns() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with secret columns, and their names."""
    found = []
    for model in apps.get_models():
        names = [
            field.name
            for field in model._meta.concrete_fields
            if isinstance(field, EncryptedSecretField)
        ]
        if names:
            found.append((model, names))
    return found


@transaction.atomic
def secrets_reencrypt(
    *, only: Iterable[type[models.Model]] | None = None, dry_run: bool = False
) -> list[ColumnReencrypted]:
    """Re-encrypt the secret columns (of the `only` models, else all) under the current
    CRYPTOGRAPHY_KEY, each value opened with whichever configured key works.

    All or nothing: a value no configured key opens raises UndecryptableValue (naming
    the rows, never the values) and the transaction leaves every row as it was. The rows
    stay locked until the end, so a concurrent rotation waits instead of interleaving.
    """
    wanted = None if only is None else set(only)
    opened: list[tuple[type[models.Model], str, dict]] = []
    undecryptable: list[str] = []
    for model, names in encrypted_columns():
        if wanted is not None and model not in wanted:
            continue
        # The stored ciphertext, not the field's decrypted value.
        casts = {f"_{name}": Cast(name, output_field=models.BinaryField()) for name in names}
        # NO KEY: it changes no key, so what only holds a row's key (a status change
        # holding its organization's webhook endpoints) need not wait for it, nor it.
        rows = model._base_manager.select_for_update(no_key=True).annotate(**casts)
        rows = rows.order_by("pk")
        columns: dict[str, dict] = {name: {} for name in names}
        for pk, *ciphertexts in rows.values_list("pk", *casts):
            for name, ciphertext in zip(names, ciphertexts, strict=True):
                if ciphertext is None:
                    continue
                try:
                    columns[name][pk] = crypto.decrypt_with_index(bytes(ciphertext))
                except crypto.UndecryptableValue:
                    undecryptable.append(f"{model._meta.label} {pk} ({name})")
        opened += [(model, name, values) for name, values in columns.items()]
    if undecryptable:
        raise crypto.UndecryptableValue(
            f"No configured key opens {len(undecryptable)} secret(s): "
            + ", ".join(undecryptable[:20])
            + "."
        )
    if not dry_run:
        for model, name, values in opened:
            for pk, (plaintext, _) in values.items():
                model._base_manager.filter(pk=pk).update(**{name: plaintext.decode()})
    counts = [
        ColumnReencrypted(model, name, len(values), sum(i > 0 for _, i in values.values()))
        for model, name, values in opened
    ]
    if not dry_run:
        logger.info(
            "re-encrypted %d secrets (%d under a fallback key)",
            sum(c.total for c in counts),
            sum(c.under_fallback for c in counts),
        )
    return counts
