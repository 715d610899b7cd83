"""The demo workflow `daily-call`: a daily check-in call (greeter → meal → feedback)."""

from __future__ import annotations

DEMO_SLUG = "daily-call"
DEMO_NAME = "Daily check-in call"

_VOICE = {
    "stt": {"provider": "deepgram", "model": "nova-3"},
    "llm": {"provider": "openai", "model": "gpt-4.1-mini"},
    "tts": {
        "provider": "cartesia",
        "model": "sonic-2",
        "voice": "f786b574-daa5-4673-aa0c-cbe3e8534c02",
    },
}

DEMO_DEFINITION: dict = {
    "start_agent": "greeter-agent",
    "agents": [
        {
            "name": "greeter-agent",
            "instructions": (
                "You are a warm assistant making a daily check-in call to "
                "{{ user.name | default('the user') }}. Speak {{ user.language | default('en') }}. "
                "Ask how they are, then hand off to the meal agent."
            ),
            "greeting": "Hello {{ user.name | default('there') }}! How are you today?",
            "tools": [],
            "handoffs": ["meal-agent"],
            **_VOICE,
        },
        {
            "name": "meal-agent",
            "instructions": (
                "Ask {{ user.name | default('the user') }} what they ate today, one meal at a "
                "time, and record each with save_meal. Then hand off to the feedback agent."
            ),
            "greeting": "",
            "tools": [
                {
                    "name": "save_meal",
                    "description": "Record a meal the user had today.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "meal_type": {
                                "type": "string",
                                "enum": ["breakfast", "lunch", "dinner", "snack"],
                            },
                            "description": {"type": "string"},
                        },
                        "required": ["meal_type"],
                    },
                }
            ],
            "handoffs": ["feedback-agent"],
            **_VOICE,
        },
        {
            "name": "feedback-agent",
            "instructions": (
                "Ask how the call went and whether anything could be better, thank "
                "{{ user.name | default('the user') }} and say goodbye."
            ),
            "greeting": "",
            "tools": [],
            "handoffs": [],
            **_VOICE,
        },
    ],
    "settings": {"connect_timeout_seconds": 60, "max_duration_seconds": 1800},
}
