"""`python -m agent dev|start|console|download-files`: the voicecalls voice-agent worker."""

from __future__ import annotations

import sys

from livekit.agents import cli

from agent.config import Config, ConfigError
from agent.worker import worker_options


def main() -> None:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        if any(arg in ("-h", "--help", "download-files") for arg in sys.argv[1:]):
            config = Config(api_url="", agent_key="")
        else:
            sys.exit(f"voicecalls agent: {exc}")
    cli.run_app(worker_options(config))


if __name__ == "__main__":
    main()
