"""The standing cast: an organization with its client, an outsider organization,
agent-worker clients, and the demo workflow."""

from __future__ import annotations

import os
import shutil

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import KeyKind, Organization
from accounts.services import api_key_create
from tests.factories import OrganizationFactory, WorkflowFactory
from workflows.models import Workflow
from workflows.services import workflow_demo_load


def bearer_client(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def another_connection(*, autocommit: bool = False):
    """A second PostgreSQL session on the test database (to hold a lock the request
    meets, or to end the test's own backend)."""
    import psycopg

    params = connection.get_connection_params()
    wanted = ("dbname", "user", "password", "host", "port")
    return psycopg.connect(**{k: params[k] for k in wanted if params.get(k)}, autocommit=autocommit)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgres` skip on SQLite; .ci/run fails if any skip on PostgreSQL."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On the PostgreSQL pass nothing may be skipped: a skip there hides a real gap."""
    if os.environ.get("VOICECALLS_FAIL_ON_SKIP") != "1" or hasattr(session.config, "workerinput"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(report.nodeid for report in skipped[:10])
        print(f"\nVOICECALLS_FAIL_ON_SKIP: {len(skipped)} test(s) skipped on PostgreSQL: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def organization(db: None) -> Organization:
    return OrganizationFactory(slug="acme", name="Acme")


@pytest.fixture
def outsider(db: None) -> Organization:
    """Another customer, whose objects must stay invisible to `organization`."""
    return OrganizationFactory(slug="outsider", name="Outsider")


@pytest.fixture
def client_key(organization: Organization) -> str:
    _, plaintext = api_key_create(name="test", organization=organization)
    return plaintext


@pytest.fixture
def api(client_key: str) -> APIClient:
    """The organization's client, authenticated with a client key."""
    return bearer_client(client_key)


@pytest.fixture
def outsider_api(outsider: Organization) -> APIClient:
    _, plaintext = api_key_create(name="outsider", organization=outsider)
    return bearer_client(plaintext)


@pytest.fixture
def agent_key(db: None) -> str:
    """A platform agent key: reaches any organization's calls on agent paths."""
    _, plaintext = api_key_create(name="fleet", kind=KeyKind.AGENT)
    return plaintext


@pytest.fixture
def agent_api(agent_key: str) -> APIClient:
    return bearer_client(agent_key)


@pytest.fixture
def org_agent_api(organization: Organization) -> APIClient:
    """An agent key restricted to `organization` (a customer running their own worker)."""
    _, plaintext = api_key_create(name="own-worker", kind=KeyKind.AGENT, organization=organization)
    return bearer_client(plaintext)


@pytest.fixture
def anonymous_api() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_client(db: None) -> Client:
    """A superuser's browser, logged in (force_login, no password: hashing one costs most
    of a second per test)."""
    user = User.objects.create_superuser("staff", "staff@example.com", None)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def workflow(organization: Organization) -> Workflow:
    """The demo workflow `daily-call`, as `load_demo` creates it."""
    workflow, _ = workflow_demo_load(organization=organization)
    return workflow


@pytest.fixture
def recording_workflow(workflow: Workflow) -> Workflow:
    """`workflow` with its `recording` setting on."""
    from tests.recordings import recording_on

    return recording_on(workflow)


@pytest.fixture
def outsider_workflow(outsider: Organization) -> Workflow:
    return WorkflowFactory(organization=outsider, slug="daily-call")


@pytest.fixture
def stream_server(transactional_db, settings):
    """The streams' ASGI service on a free port (its base URL), with a short heartbeat,
    poll and end grace so tests of live streams run in seconds."""
    from tests.stream_server import asgi_server

    settings.STREAMS_HEARTBEAT_SECONDS = 0.5
    settings.STREAMS_POLL_SECONDS = 0.05
    settings.STREAMS_END_GRACE_SECONDS = 0.3
    with asgi_server() as base:
        yield base


@pytest.fixture
def fake_livekit(settings):
    """A fake LiveKit server on a loopback port; settings.LIVEKIT_URL points at it."""
    from tests import fake_livekit as fake_server

    fake, server = fake_server.start(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
    settings.LIVEKIT_URL = fake.url
    yield fake
    fake.stop()
    server.shutdown()
    server.server_close()


@pytest.fixture
def livekit_gives_up_fast(fake_livekit, settings) -> None:
    """Our LiveKit client gives up after 1 s, for tests of an answer that never comes or
    comes late. Only for those: under a loaded CI machine's -n 2, a 1 s limit for every
    test cut the fake's ordinary answers too (a trunk's creation in a test's setup)."""
    settings.LIVEKIT_API_TIMEOUT_SECONDS = 1.0


@pytest.fixture
def sip_fake(fake_livekit):
    """The fake LiveKit, its webhooks delivered to our webhook view (tests/phone.py)."""
    from tests.phone import webhooks_to_our_view

    webhooks_to_our_view(fake_livekit)
    return fake_livekit


@pytest.fixture(autouse=True)
def _allow_private_webhook_urls(settings: object) -> None:
    """Tests deliver webhooks to receivers on 127.0.0.1, as `make run` allows;
    tests/test_webhook_ssrf.py turns the guard back on."""
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True


@pytest.fixture(scope="session")
def live_server_gunicorn(tmp_path_factory: pytest.TempPathFactory):
    """gunicorn serving the app with gunicorn.conf.py on its own SQLite file."""
    from tests.live_server import gunicorn_server

    with gunicorn_server(tmp_path_factory.mktemp("gunicorn")) as live:
        yield live


@pytest.fixture(scope="session")
def live_server_streams(tmp_path_factory: pytest.TempPathFactory):
    """The live call streams' service as production runs it: voicecalls.asgi under
    gunicorn with gunicorn.streams.conf.py (uvicorn workers), on its own SQLite file."""
    from tests.live_server import STREAMS, gunicorn_server

    with gunicorn_server(tmp_path_factory.mktemp("streams"), STREAMS) as live:
        yield live


@pytest.fixture
def fake_llm(settings):
    """The LLM providers' stand-in (tests/fake_llm.py) as the analyses' provider, with no
    waits before the end-of-call report or between retries."""
    from tests.fake_llm import FakeLLM

    with FakeLLM() as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        settings.WEBHOOKS_END_REPORT_DELAY = 0
        settings.ANALYSIS_RETRY_BASE_SECONDS = 0
        yield fake


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict:
    """Tests marked `browser` drive Debian's chromium (pytest-playwright's launch args)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls in
    # the test body are still synchronous, so tell Django that is intended.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    return {
        "executable_path": chromium,
        "headless": True,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    }


@pytest.fixture(scope="session")
def s3_server():
    """The S3 stand-in: moto's server mode on a loopback port, spoken to over HTTP by
    boto3 (ours and the fake egress's) and by browsers fetching presigned links."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def recordings_bucket(settings, s3_server) -> str:
    """A fresh bucket in the S3 stand-in, configured as the platform's recording storage."""
    from tests.recordings import bucket_create

    bucket = bucket_create(s3_server)
    settings.RECORDINGS_S3_ENDPOINT = s3_server
    settings.RECORDINGS_S3_BUCKET = bucket
    settings.RECORDINGS_S3_REGION = "us-east-1"
    settings.RECORDINGS_S3_ACCESS_KEY_ID = "AKIAPLATFORMKEY0001"
    settings.RECORDINGS_S3_SECRET_ACCESS_KEY = "platform-secret-Xq7vT2mN9pL4kR8w"
    return bucket


@pytest.fixture
def egress_fake(fake_livekit):
    """The fake LiveKit, its (egress) webhooks delivered to our webhook view."""
    from tests.phone import webhooks_to_our_view

    webhooks_to_our_view(fake_livekit)
    return fake_livekit
