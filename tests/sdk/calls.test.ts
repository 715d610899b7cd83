// The generated TypeScript client (sdk/typescript) against the live server.
// Compiled by `make sdk` (tsc) and run by tests/sdk/test_typescript_sdk.py with
// `node --test`; the server, its key and how to run manage.py come from the environment.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";

import {
  callsActive,
  callsCreate,
  callsEnd,
  callsList,
  callsMetrics,
  callsRetrieve,
  callsTranscript,
  organizationPartialUpdate,
  providerKeysCreate,
  providerKeysDestroy,
  providerKeysList,
  sipTrunksCreate,
} from "../../sdk/typescript";
import { createClient } from "../../sdk/typescript/client";

const env = (name: string): string => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};

const ORG = env("VOICECALLS_ORG");
const client = createClient({
  baseUrl: env("VOICECALLS_BASE_URL"),
  auth: env("VOICECALLS_API_KEY"),
  throwOnError: true,
});

const simulateCall = (callId: string): void => {
  execFileSync(env("VOICECALLS_PYTHON"), ["manage.py", "simulate_call", "--org", ORG, "--call", callId], {
    cwd: env("VOICECALLS_ROOT"),
    stdio: ["ignore", "ignore", "inherit"],
  });
};

const createCall = async (userId: string) => {
  const { data, response } = await callsCreate({
    client,
    body: {
      workflow_slug: "daily-call",
      user_id: userId,
      user_data: { name: "John Doe", language: "en" },
      metadata: { session_id: "abc123", source: "mobile-app" },
      direction: "outbound",
    },
  });
  assert.equal(response.status, 201);
  return data;
};

test("provider keys are created, listed masked and deleted", async () => {
  const { data: created } = await providerKeysCreate({
    client,
    body: { provider_type: "llm", provider_name: "openai", api_key: "sk-sdk-test-9876", is_default: true },
  });
  assert.equal(created.provider_type, "llm");
  assert.equal(created.provider_name, "openai");
  assert.equal(created.is_default, true);
  assert.equal(created.masked_key, "••••9876");

  const { data: listed } = await providerKeysList({ client });
  assert.deepEqual(
    listed.items.map((k) => [k.id, k.masked_key]),
    [[created.id, "••••9876"]],
  );

  const deleted = await providerKeysDestroy({ client, path: { id: created.id } });
  assert.equal(deleted.response.status, 204);
  const again = await providerKeysDestroy({ client, path: { id: created.id }, throwOnError: false });
  assert.equal(again.response.status, 404);
  assert.equal(again.error?.errors[0]?.code, "not_found");
  assert.deepEqual((await providerKeysList({ client })).data.items, []);
});

test("a call is created, driven and read back", async () => {
  const joined = await createCall("user-123");
  assert.equal(joined.status, "connecting");
  assert.equal(joined.room_name, `call-${joined.call_id}`);
  assert.match(joined.token, /^eyJ/);

  const { data: active } = await callsActive({ client, query: { limit: 10 } });
  assert.deepEqual(
    active.map((c) => [c.id, c.status, c.user_id, c.current_agent]),
    [[joined.call_id, "connecting", "user-123", null]],
  );

  simulateCall(joined.call_id);

  const { data: call } = await callsRetrieve({ client, path: { id: joined.call_id } });
  assert.equal(call.id, joined.call_id);
  assert.equal(call.workflow_slug, "daily-call");
  assert.equal(call.status, "completed");
  assert.equal(call.direction, "outbound");
  assert.deepEqual(call.agent_history, ["greeter-agent", "meal-agent", "feedback-agent"]);
  assert.equal(call.current_agent, null);
  assert.deepEqual(call.user_data, { name: "John Doe", language: "en" });
  assert.ok(call.started_at && call.ended_at && call.started_at <= call.ended_at);
  assert.equal(call.metrics.total_tokens, 1500);
  assert.equal(call.metrics.agent_handoffs, 2);
  assert.equal(call.metrics.stt_latency_ms, 120);
  assert.equal(call.metrics.llm_latency_ms, 280);
  assert.equal(call.metrics.tts_latency_ms, 85);
  // The demo workflow asks for no post-call analysis.
  assert.equal(call.analysis, null);

  const { data: metrics } = await callsMetrics({ client, path: { id: joined.call_id } });
  assert.deepEqual(metrics, call.metrics);

  const { data: transcript } = await callsTranscript({ client, path: { id: joined.call_id } });
  assert.deepEqual(
    [transcript[0]?.role, transcript[0]?.content, transcript[0]?.agent_name],
    ["system", "Call started", "greeter-agent"],
  );
  const withTools = transcript.filter((entry) => entry.tool_call !== undefined);
  assert.equal(withTools.length, 1);
  assert.equal(withTools[0]?.tool_call?.name, "save_meal");
  assert.equal(withTools[0]?.tool_call?.arguments["meal_type"], "breakfast");

  assert.deepEqual((await callsActive({ client })).data, []);
});

test("the list filters and pages; a call is hung up", async () => {
  const done = await createCall("user-list-done");
  simulateCall(done.call_id);
  const waiting = await createCall("user-list-waiting");
  const { data: call } = await callsRetrieve({ client, path: { id: done.call_id } });
  assert.ok(call.started_at);

  const { data: page } = await callsList({ client, query: { user_id: "user-list-done" } });
  assert.deepEqual([page.total, page.page, page.page_size, page.pages], [1, 1, 20, 1]);
  assert.deepEqual(
    page.items.map((c) => [c.id, c.status]),
    [[done.call_id, "completed"]],
  );

  const { data: both } = await callsList({
    client,
    query: { status: ["completed", "connecting"], workflow_id: call.workflow_id, page_size: 100 },
  });
  const ids = both.items.map((c) => c.id);
  assert.ok(ids.indexOf(waiting.call_id) >= 0 && ids.indexOf(waiting.call_id) < ids.indexOf(done.call_id));

  const { data: connecting } = await callsList({ client, query: { status: ["connecting"] } });
  assert.deepEqual(
    connecting.items.map((c) => c.id),
    [waiting.call_id],
  );

  const started = new Date(call.started_at);
  const { data: window } = await callsList({
    client,
    query: {
      user_id: "user-list-done",
      started_after: started.toISOString(),
      started_before: new Date(started.getTime() + 1000).toISOString(),
    },
  });
  assert.equal(window.total, 1);

  const invalid = await callsList({ client, query: { page_size: 1000 }, throwOnError: false });
  assert.equal(invalid.response.status, 400);
  assert.equal(invalid.error?.type, "validation_error");

  const { data: ended } = await callsEnd({ client, path: { id: waiting.call_id } });
  assert.equal(ended.status, "completed");
  assert.equal(ended.end_reason, "api_request");
  assert.deepEqual((await callsActive({ client })).data, []);
});

test("an outbound phone call: a trunk, the caller id, then the call", async () => {
  // Staff allow the US (the admin's job): the guard refuses every country until then.
  const allow = `from accounts.models import Organization as O; O.objects.filter(slug=${JSON.stringify(ORG)}).update(allowed_destination_countries=["US"])`;
  execFileSync(env("VOICECALLS_PYTHON"), ["manage.py", "shell", "-c", allow], {
    cwd: env("VOICECALLS_ROOT"),
    stdio: ["ignore", "ignore", "inherit"],
  });
  // Not the Python SDK test's number: a number is on one organization's trunks only.
  const { data: trunk } = await sipTrunksCreate({
    client,
    body: {
      name: "Telnyx",
      direction: "outbound",
      address: "sip.telnyx.com",
      numbers: ["+14155550101"],
      auth_username: "acme",
      auth_password: "sdk-trunk-secret",
    },
  });
  assert.equal(trunk.auth_password_masked, "••••");
  await organizationPartialUpdate({ client, body: { default_caller_number: "+14155550101" } });

  // The SDK sends `direction` as given: a phone call says outbound.
  const { data: joined, response } = await callsCreate({
    client,
    body: { workflow_slug: "daily-call", phone_number: "+14155550123", direction: "outbound" },
  });
  assert.equal(response.status, 201);
  assert.equal(joined.status, "pending");
  assert.equal(joined.channel, "phone");
  const { data: call } = await callsRetrieve({ client, path: { id: joined.call_id } });
  assert.equal(call.phone_number, "+14155550123");
  assert.equal(call.from_number, "+14155550101");
});
