/**
 * The process around the service (src/service/process.ts): the one memory-reducing collection once start-up
 * is done, through the `gc()` V8's --expose-gc installs (V8_FLAGS in src/permissions.ts).
 */
import assert from "node:assert/strict";
import { collectStartupGarbage, type ExposedGc } from "../src/service/process.ts";

Deno.test("collectStartupGarbage: one last-resort major collection, synchronously, with the RSS around it", () => {
  const calls: Parameters<ExposedGc>[0][] = [];
  const collected = collectStartupGarbage((options) => calls.push(options));
  assert.deepEqual(calls, [{ type: "major", execution: "sync", flavor: "last-resort" }]);
  assert.ok(collected);
  assert.ok(collected.rssBeforeMib > 0 && collected.rssAfterMib > 0 && collected.ms >= 0);
});

Deno.test("collectStartupGarbage: nothing without an exposed gc (V8 flags replaced, tests)", () => {
  assert.equal(collectStartupGarbage(undefined), undefined);
});
