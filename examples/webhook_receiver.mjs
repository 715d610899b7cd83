// A receiver of voicecalls webhooks in Node, with its standard library only
// (docs/webhooks.md; examples/webhook_receiver.py is the same in Python).
//
//   VOICECALLS_WEBHOOK_SECRETS=whsec_... node examples/webhook_receiver.mjs 8080
//
// During a secret rotation give both secrets, comma-separated. It checks each request's
// signature and time on the raw body (never on re-serialized JSON), answers at once, and
// handles each event once (by `webhook-id`); replace `handled` and `onEvent` with yours.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { pathToFileURL } from "node:url";

const TOLERANCE_SECONDS = 5 * 60;

/** True when `body` (a Buffer) was signed by voicecalls with one of `secrets` less than
 * five minutes from `now` (seconds). `headers` as Node gives them: names in lower case. */
export function verify(secrets, headers, body, now = Date.now() / 1000) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"] ?? "";
  const signatures = (headers["webhook-signature"] ?? "").split(" ").filter(Boolean);
  if (!id || !/^[0-9]+$/.test(timestamp) || signatures.length === 0) return false;
  if (Math.abs(now - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  return secrets.some((secret) => {
    const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
    const digest = createHmac("sha256", key).update(`${id}.${timestamp}.`).update(body);
    const expected = Buffer.from("v1," + digest.digest("base64"));
    return signatures.some((signature) => {
      const given = Buffer.from(signature);
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
  });
}

/** An HTTP server that verifies each delivery and calls `onEvent(event)` once per
 * event id (keep the ids a week: retries go on for about three days). */
export function receiver(secrets, onEvent, handled = new Set()) {
  return createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      const body = Buffer.concat(chunks);
      // Any 4xx but 410 ends the delivery; 410 disables the endpoint.
      if (!verify(secrets, request.headers, body)) return response.writeHead(401).end();
      try {
        const event = JSON.parse(body.toString("utf8"));
        if (!handled.has(event.id)) {
          onEvent(event); // call.status_changed, call.ended, call.analyzed; ignore others
          handled.add(event.id);
        }
        response.writeHead(204).end();
      } catch {
        response.writeHead(500).end(); // retried
      }
    });
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const secrets = process.env.VOICECALLS_WEBHOOK_SECRETS.split(",");
  const port = Number(process.argv[2] ?? 8080);
  receiver(secrets, (event) => console.log(JSON.stringify(event))).listen(port, "127.0.0.1");
}
