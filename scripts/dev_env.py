"""`make run`'s first step: write the git-ignored `.env` a newcomer's shell lacks.

On the first run only, `.env` gets `DEBUG=1` and freshly generated dev secrets, so every
`.venv/bin/python manage.py …` line of the README works verbatim in a new shell (the
settings read the file; real environment variables win over it). An existing file is
never touched. VOICECALLS_ENV_FILE names another file, as it does for the settings.
Secrets are never printed.

    python scripts/dev_env.py
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent.parent / ".env"

TEMPLATE = """\
# Written by `make run` on its first run (scripts/dev_env.py) for local development only.
# Git-ignored: never commit it. Production sets DEBUG off and real secrets in the
# environment, which also wins over anything in this file.
DEBUG=1
SECRET_KEY={secret_key}
CRYPTOGRAPHY_KEY={cryptography_key}
"""


def env_file_path() -> Path:
    return Path(os.environ.get("VOICECALLS_ENV_FILE") or DEFAULT_PATH)


def write_dev_env(path: Path) -> bool:
    """Create `path` with DEBUG=1 and new dev secrets unless it exists; True if written."""
    content = TEMPLATE.format(
        secret_key=secrets.token_urlsafe(50), cryptography_key=secrets.token_urlsafe(50)
    )
    try:
        # O_EXCL: never overwrite, even if another `make run` races this one. 0600: secrets.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(content)
    return True


def main() -> int:
    path = env_file_path()
    if write_dev_env(path):
        print(f"Wrote {path}: DEBUG=1 and new dev secrets (local development only).")
    else:
        print(f"Kept {path} as it is.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
