/** Logging: stable JSON keys, emoji markers on a TTY, and secrets redacted. */
import assert from "node:assert/strict";
import { logger, resetLogging, setupLogging } from "../src/log.ts";

async function capture(format: "json" | "pretty", fn: () => void): Promise<string[]> {
  const lines: string[] = [];
  await setupLogging({ level: "debug", format, write: (line) => lines.push(line) });
  try {
    fn();
  } finally {
    await resetLogging();
  }
  return lines;
}

Deno.test("JSON lines carry stable top-level keys", async () => {
  const [line] = await capture("json", () => {
    logger("broker").info("sale {event_id} in custody", {
      event_id: "e-1",
      channel: "shopify",
      sku: "A",
      attempt: 2,
      mark: "done",
    });
  });
  const parsed = JSON.parse(line);
  assert.equal(parsed.level, "info");
  assert.equal(parsed.logger, "marketplace-sync.broker");
  assert.equal(parsed.message, "sale e-1 in custody");
  assert.equal(parsed.event_id, "e-1");
  assert.equal(parsed.channel, "shopify");
  assert.equal(parsed.sku, "A");
  assert.equal(parsed.attempt, 2);
  assert.ok(!("mark" in parsed));
  assert.ok(!Number.isNaN(Date.parse(parsed.time)));
});

Deno.test("pretty lines carry the design's emoji markers", async () => {
  const lines = await capture("pretty", () => {
    const log = logger("broker");
    log.info("received", { mark: "received" });
    log.info("done", { mark: "done" });
    log.warning("retry", { mark: "retry" });
    log.error("failed", { mark: "error" });
    log.info("bye", { mark: "shutdown" });
  });
  for (const [i, emoji] of ["📥", "✅", "🔄", "❌", "🛑"].entries()) {
    assert.ok(lines[i].includes(emoji), lines[i]);
  }
});

Deno.test("tokens, passwords, Authorization values and URL credentials are redacted", async () => {
  const secrets = [
    "hunter2",
    "shpat_abc123def456",
    "APP_USR-1234567890-abcdef",
    "sk_live_supersecret",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "TG-opaque-value-1",
    "zzzsecret",
  ];
  for (const format of ["json", "pretty"] as const) {
    const lines = await capture(format, () => {
      const log = logger("channels");
      log.info("connecting to amqp://guest:hunter2@rabbit:5672/");
      log.info("calling shopify", {
        token: "shpat_abc123def456",
        headers: { Authorization: "Bearer APP_USR-1234567890-abcdef" },
      });
      log.info("refresh", { refresh_token: "sk_live_supersecret", password: "hunter2" });
      log.warning("upstream said: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl");
      log.info("oauth {body}", { body: "access_token=shpat_abc123def456" });
      log.info("meli said {response}", {
        response: '{"refresh_token":"TG-opaque-value-1","client_secret":"zzzsecret"}',
      });
    });
    const text = lines.join("");
    for (const secret of secrets) assert.ok(!text.includes(secret), `${format}: leaked ${secret}:\n${text}`);
    assert.equal(lines.length, 6);
  }
});
