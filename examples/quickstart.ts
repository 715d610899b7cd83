// Start a call from the demo workflow and list the active calls, with the TypeScript SDK.
//   make sdk   (generates sdk/typescript and compiles this file to sdk/build/examples/quickstart.js)
//   VOICECALLS_API_KEY=... node sdk/build/examples/quickstart.js
import { callsActive, callsCreate } from "../sdk/typescript";
import { createClient } from "../sdk/typescript/client";

async function main(): Promise<void> {
  const client = createClient({
    baseUrl: process.env.VOICECALLS_BASE_URL ?? "http://127.0.0.1:8000",
    auth: process.env.VOICECALLS_API_KEY,
    throwOnError: true,
  });

  const { data: joined } = await callsCreate({
    client,
    body: { workflow_slug: "daily-call", user_id: "user-123", user_data: { name: "John Doe" } },
  });
  console.log(`Call ${joined.call_id} is ${joined.status}`);
  // Hand these to the app: it joins the LiveKit room with the token.
  console.log(`Join room ${joined.room_name} at ${joined.livekit_url} with token ${joined.token.slice(0, 12)}…`);

  const { data: active } = await callsActive({ client, query: { limit: 10 } });
  console.log(`Active calls: ${active.length}`);
}

main().catch((error: unknown) => {
  console.error("Could not start the call:", error);
  process.exit(1);
});
