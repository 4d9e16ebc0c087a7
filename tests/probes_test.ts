/** src/service/probes.ts: the readiness registry names every failing dependency and never leaks a password. */
import assert from "node:assert/strict";
import { HealthRegistry } from "../src/service/probes.ts";

Deno.test("a check that throws is reported down with its message, the URL's password redacted", async () => {
  const checks = await new HealthRegistry()
    .add("broker", () => ({ ok: true }))
    .add("postgres", () => {
      throw new Error("connect ECONNREFUSED postgres://sync:hunter2@db.internal:5432/ledger");
    })
    .add("redis", () => Promise.resolve({ ok: false, detail: "not connected" }))
    .run();
  assert.deepEqual(Object.keys(checks), ["broker", "postgres", "redis"]);
  assert.deepEqual(checks.broker, { ok: true });
  assert.equal(checks.postgres.ok, false);
  assert.match(checks.postgres.detail!, /ECONNREFUSED/);
  assert.doesNotMatch(checks.postgres.detail!, /hunter2/);
  assert.deepEqual(checks.redis, { ok: false, detail: "not connected" });
});

Deno.test("a check added again under the same name replaces the first", async () => {
  const checks = await new HealthRegistry()
    .add("redis", () => ({ ok: false, detail: "first" }))
    .add("redis", () => ({ ok: true }))
    .run();
  assert.deepEqual(checks, { redis: { ok: true } });
});
