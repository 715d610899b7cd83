// @hey-api/openapi-ts: the TypeScript client, generated from the committed schema.
import { defineConfig } from "@hey-api/openapi-ts";

export default defineConfig({
  input: "../openapi.yaml",
  output: { path: "../sdk/typescript", clean: true },
  // throwOnError: a failed request throws, so `data` is typed as the success body.
  plugins: ["@hey-api/typescript", "@hey-api/sdk", { name: "@hey-api/client-fetch", throwOnError: true }],
});
