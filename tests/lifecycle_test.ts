/**
 * The process as operators run it: start-up with no configuration, one error
 * listing every bad variable, and SIGTERM with deliveries in flight (committed
 * and acked, or redelivered — never lost, never doubled; exit code 0).
 */
import assert from "node:assert/strict";
import { startService } from "../src/main.ts";
import { startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { harnessFor, integration, sale, testConfig, testEnv, waitFor } from "./helpers.ts";
import { Pos } from "./pos.ts";
import { meliAsRealApi } from "../scripts/support/service_env.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const PERMISSIONS = ["--allow-net", "--allow-env", "--allow-sys=hostname,osRelease", "--allow-read"];

function spawnService(env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN],
    env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "/tmp", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Collects a child's output lines and resolves the first one matching. */
function watchLines(stream: ReadableStream<Uint8Array>) {
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  const done = (async () => {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let i;
      while ((i = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        lines.push(line);
        for (const w of [...waiters]) {
          if (w.re.test(line)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    }
  })();
  return {
    lines,
    done,
    waitFor(re: RegExp, timeoutMs = 20_000): Promise<string> {
      const found = lines.find((l) => re.test(l));
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        waiters.push({ re, resolve });
        setTimeout(
          () => reject(new Error(`no line matching ${re} in ${timeoutMs} ms:\n${lines.join("\n")}`)),
          timeoutMs,
        );
      });
    },
  };
}

integration("SIGTERM with deliveries in flight: exit 0, nothing lost, nothing doubled", async () => {
  const env = testEnv({
    LOG_FORMAT: "json",
    LOG_LEVEL: "info",
    CUSTODY_BATCH_WAIT: "30ms",
    CUSTODY_BATCH_SIZE: "50",
  });
  const config = testConfig(env);
  // Declare the topology and queue the burst before the child starts, so
  // deliveries are certainly in flight when SIGTERM arrives.
  const probe = startService({ ...config, CONSUMER_CONCURRENCY: 1 });
  await probe.started;
  const h = await harnessFor(probe, config);
  await probe.close();
  const n = 4000;
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const e = sale();
    ids.push(e.event_id as string);
    await h.publish(e, { messageId: e.event_id as string });
  }
  const child = spawnService(env);
  const out = watchLines(child.stdout);
  const err = watchLines(child.stderr);
  try {
    await waitFor(
      async () => (await h.sql`select count(*)::int as n from sale`)[0].n > 300,
      "child is storing",
    );
    child.kill("SIGTERM");
    const status = await child.status;
    await Promise.all([out.done, err.done]);
    assert.equal(status.code, 0, `exit code 0; stderr: ${err.lines.join("\n")}`);
    const stored = (await h.sql`select count(*)::int as n from sale`)[0].n;
    assert.ok(stored < n, `stopped before the end of the burst (${stored}/${n})`);
    const json = out.lines.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    assert.ok(json.some((l) => l.message.includes("received SIGTERM")));
    assert.ok(json.some((l) => l.message === "stopped"));
    for (const l of json) {
      for (const key of ["time", "level", "logger", "message"]) {
        assert.ok(key in l, `JSON log line has ${key}`);
      }
    }

    // A new instance drains the rest: every event exactly once.
    const next = startService(config);
    await next.started;
    try {
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from sale`)[0].n === n,
        `${n} sales`,
        30_000,
      );
      await waitFor(async () => (await h.queueDepth()) === 0, "queue drained");
      assert.equal((await h.sql`select count(*)::int as n from stock_change`)[0].n, n * 2);
      const rows = await h.sql<{ event_id: string }[]>`select event_id from sale`;
      assert.deepEqual(rows.map((r) => r.event_id).sort(), [...ids].sort());
    } finally {
      await next.close();
    }
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await h.close();
  }
});

integration("every invalid variable is reported in one start-up error; secrets are not echoed", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MAIN],
    env: {
      HTTP_PORT: "eighty",
      RABBITMQ_URL: "http://guest:hunter2secret@localhost",
      QUEUE_TYPE: "fancy",
      RETRY_DELAYS: "1s,soon",
      CHANNELS: "shopify,amazon",
      ADMIN_TOKEN: "tooshort-secret",
      SHOPIFY_TOKEN: "shpat_verysecretvalue",
      CUSTODY_BATCH_SIZE: "0",
    },
    stdout: "piped",
    stderr: "piped",
  });
  const result = await child.output();
  const stderr = new TextDecoder().decode(result.stderr);
  assert.equal(result.code, 2);
  for (
    const name of [
      "HTTP_PORT",
      "RABBITMQ_URL",
      "QUEUE_TYPE",
      "RETRY_DELAYS",
      "CHANNELS",
      "ADMIN_TOKEN",
      "CUSTODY_BATCH_SIZE",
      "SHOPIFY_URL",
    ]
  ) {
    assert.ok(stderr.includes(name), `names ${name}:\n${stderr}`);
  }
  assert.match(stderr, /invalid configuration \(8 problems\)/);
  for (const secret of ["hunter2secret", "tooshort-secret", "shpat_verysecretvalue"]) {
    assert.ok(!stderr.includes(secret), `does not echo ${secret}`);
  }
});

integration(
  "with no configuration at all the service starts on loopback defaults and stops on SIGTERM",
  async () => {
    // Only the HTTP port is set, so this test does not clash with a developer's running instance.
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const child = spawnService({ HTTP_PORT: String(port), LOG_FORMAT: "json" });
    const out = watchLines(child.stdout);
    try {
      await waitFor(
        async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200,
        "readyz 200",
        30_000,
      );
      const ready = await (await fetch(`http://127.0.0.1:${port}/readyz`)).json();
      assert.deepEqual(ready.down, []);
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
      await out.done;
      assert.ok(
        out.lines.some((l) => l.includes("marketplace-sync.sales.created")),
        "uses the default queue",
      );
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.stderr.cancel().catch(() => {});
    }
  },
);

integration(
  "shutdown during a slow MeLi token refresh ends within SHUTDOWN_TIMEOUT, closing the broker and the ledger",
  async () => {
    const catalog = defaultCatalog();
    const store = catalog.stores[0].tienda_id;
    // MeLi takes 8 s to answer the refresh; the shutdown budget is 3 s.
    const sandbox = await startMeliSandbox({ catalog, tiendaId: store, faults: { latencyMs: 8_000 } });
    const pos = await Pos.open();
    const config = testConfig({
      ...meliAsRealApi(sandbox, store),
      MELI_TIMEOUT: "300ms",
      POS_STOCK_KEY: pos.keyTemplate,
      DISPATCH_POLL_INTERVAL: "50ms",
      SHUTDOWN_TIMEOUT: "3s",
    });
    const service = startService(config);
    await service.started;
    const h = await harnessFor(service, config);
    try {
      // A sale for the MeLi store: its dispatch asks for a token, which starts the refresh.
      await pos.sell(h, store, [{ sku: catalog.products[0].sku, qty: 1 }]);
      await waitFor(
        async () => (await h.sql`select 1 from stock_change`).length > 0,
        "a MeLi change to dispatch",
      );
      await new Promise((r) => setTimeout(r, 1_000)); // the dispatcher has claimed it and is refreshing
      const began = Date.now();
      await service.close();
      const took = Date.now() - began;
      assert.ok(took <= 3_000 + 500, `shutdown kept to SHUTDOWN_TIMEOUT=3s (took ${took} ms)`);
      await waitFor(() => sandbox.stats().refreshes === 1, "the refresh was in flight at shutdown", 10_000);
    } finally {
      await h.close();
      await sandbox.close();
      await pos.close();
    }
  },
);
