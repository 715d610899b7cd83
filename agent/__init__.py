"""The voicecalls voice-agent worker: a livekit-agents worker that runs a call's workflow.

It talks to the web service only through the agent API (`/api/v1/agent/*`).
"""
