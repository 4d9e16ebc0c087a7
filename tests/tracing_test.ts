/**
 * Tracing end to end: the service runs as its own process with `OTEL_DENO=true`
 * and Deno's built-in OTLP exporter pointed at a tiny OTLP/HTTP (JSON) receiver
 * in this test. Sales go through custody and the Shopify sandbox; on SIGTERM
 * the exporter flushes, and the receiver must hold our batch spans with their
 * attributes, and Deno's own fetch / HTTP-server spans nested under them.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import type { RunningService } from "../src/main.ts";
import { topologyFromConfig } from "../src/broker/topology.ts";
import { withSpan } from "../src/tracing.ts";
import { parse } from "yaml";
import { harnessFor, integration, sale, testEnv, waitFor } from "./helpers.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
// The production permission set (deno.json's start task): the exporter needs no permission of its own.
const PERMISSIONS = ["--allow-net", "--allow-env", "--allow-sys=hostname,osRelease", "--allow-read"];

/** OTLP/JSON attribute value, flattened. */
type Value = string | number | boolean | undefined;

interface OtlpSpan {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  attributes?: { key: string; value: Record<string, unknown> }[];
  status?: { code?: number };
  scope: string;
  service?: Value;
}

const SPAN_KIND = { internal: 1, server: 2, client: 3 };

function valueOf(value: Record<string, unknown>): Value {
  const [kind, v] = Object.entries(value)[0] ?? [];
  if (kind === "intValue") return Number(v); // int64 travels as a string in OTLP/JSON
  return v as Value;
}

function attr(span: OtlpSpan, key: string): Value {
  const found = span.attributes?.find((a) => a.key === key);
  return found ? valueOf(found.value) : undefined;
}

/** An OTLP/HTTP receiver (JSON encoding) on loopback that keeps every span it is sent. */
function startReceiver() {
  const spans: OtlpSpan[] = [];
  const paths: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    paths.push(`${req.method} ${path} ${req.headers.get("content-type")}`);
    const text = await req.text(); // Deno's exporter sends it uncompressed
    if (req.method === "POST" && path === "/v1/traces") {
      const payload = JSON.parse(text);
      for (const rs of payload.resourceSpans ?? []) {
        const service = rs.resource?.attributes?.find((a: { key: string }) => a.key === "service.name");
        for (const ss of rs.scopeSpans ?? []) {
          for (const span of ss.spans ?? []) {
            spans.push({ ...span, scope: ss.scope?.name, service: service && valueOf(service.value) });
          }
        }
      }
    }
    return Response.json({}); // an empty Export*ServiceResponse: all accepted
  });
  const port = (server.addr as Deno.NetAddr).port;
  return { spans, paths, url: `http://127.0.0.1:${port}`, close: () => server.shutdown() };
}

integration(
  "with OTEL_DENO=true custody and Shopify batches export spans, with Deno's nested under them",
  async () => {
    const receiver = startReceiver();
    const env = testEnv({
      CHANNELS: "shopify",
      DISPATCH_ENABLED: "true",
      LOG_LEVEL: "info",
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_SERVICE_NAME: "marketplace-sync-test",
    });
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, MAIN],
      env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "/tmp", ...env },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    let stdout = "";
    const listening = Promise.withResolvers<string>();
    listening.promise.catch(() => {}); // awaited below; a crash before then must not go unhandled
    const stdoutDone = (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        stdout += chunk;
        const url = stdout.match(/listening on (http:\/\/[0-9.]+:\d+)/)?.[1];
        if (url) listening.resolve(url);
      }
      listening.reject(new Error(`the service exited before listening:\n${stdout}`));
    })();
    // The probing side of the usual harness; "closing" the service means SIGTERM and its exit code.
    const config = loadConfig(env);
    let exitCode: number | undefined;
    const stub = {
      topology: topologyFromConfig(config),
      close: async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        exitCode ??= (await child.status).code;
      },
    } as unknown as RunningService;
    const h = await harnessFor(stub, config);
    try {
      // HTTP_PORT=0: the start-up log line says where the service listens.
      const url = await listening.promise;
      await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, "readyz 200", 30_000);
      const sales = [sale(), sale(), sale()];
      for (const s of sales) await h.publish(s, { messageId: String(s.event_id) });
      await waitFor(
        async () => {
          const [row] = await h.sql<{ n: number }[]>`
          select count(*)::int as n from stock_change where channel = 'shopify' and status = 'applied'`;
          return row.n === sales.length;
        },
        "the sales applied on the Shopify sandbox",
        30_000,
      );
    } finally {
      await h.close(); // SIGTERM: the exporter flushes as the process exits
    }
    await stdoutDone;
    await receiver.close();
    assert.equal(exitCode, 0, `clean exit\n${await stderr}`);

    const spans = receiver.spans;
    const names = [...new Set(spans.map((s) => s.name))].sort();
    assert.ok(
      spans.length > 0,
      `spans received (requests: ${receiver.paths.join(", ")})\n${stdout}\n${await stderr}`,
    );
    assert.ok(spans.every((s) => s.service === "marketplace-sync-test"), "OTEL_SERVICE_NAME is the resource");

    const custody = spans.filter((s) => s.name === "custody batch");
    assert.ok(custody.length > 0, `a custody batch span (got ${names.join(", ")})`);
    assert.ok(custody.every((s) => s.scope === "marketplace-sync"), "our instrumentation scope");
    assert.equal(custody.reduce((n, s) => n + Number(attr(s, "messaging.batch.message_count")), 0), 3);
    assert.equal(custody.reduce((n, s) => n + Number(attr(s, "marketplace_sync.sales_new")), 0), 3);
    assert.ok(custody.every((s) => attr(s, "marketplace_sync.outcome") === "committed"));
    assert.ok(custody.every((s) => attr(s, "marketplace_sync.sales_rearmed") === 0));

    const batches = spans.filter((s) => s.name === "shopify batch");
    assert.ok(batches.length > 0, `a shopify batch span (got ${names.join(", ")})`);
    for (const b of batches) {
      assert.equal(attr(b, "marketplace_sync.channel"), "shopify");
      assert.equal(typeof attr(b, "marketplace_sync.batch_id"), "string");
      assert.equal(attr(b, "marketplace_sync.resend"), false);
      assert.equal(attr(b, "marketplace_sync.outcome"), "done");
    }
    // One listing (store × SKU) for the three sales; coalesced or not, every change is applied.
    assert.equal(batches.reduce((n, b) => n + Number(attr(b, "marketplace_sync.changes")), 0), 3);
    assert.equal(batches.reduce((n, b) => n + Number(attr(b, "marketplace_sync.failed")), 0), 0);
    assert.ok(batches.reduce((n, b) => n + Number(attr(b, "marketplace_sync.applied")), 0) >= 1);

    // Deno's built-in spans: the Shopify client's fetch is a child of our batch span, and the
    // built-in sandbox's Deno.serve span continues the same trace (traceparent propagation).
    const batchIds = new Set(batches.map((b) => b.spanId));
    const fetches = spans.filter((s) => s.scope === "deno" && s.kind === SPAN_KIND.client);
    const nestedFetch = fetches.find((s) => batchIds.has(s.parentSpanId ?? ""));
    assert.ok(nestedFetch, `a fetch span under a shopify batch (fetch spans: ${fetches.length})`);
    assert.equal(attr(nestedFetch, "http.request.method"), "POST");
    assert.match(String(attr(nestedFetch, "url.full")), /graphql/);
    const served = spans.find((s) =>
      s.scope === "deno" && s.kind === SPAN_KIND.server && s.parentSpanId === nestedFetch.spanId
    );
    assert.ok(served, "the sandbox's HTTP server span is the fetch's child");
    assert.equal(served.traceId, nestedFetch.traceId);
    // And the service's own HTTP server: the readiness probes above.
    const probes = spans.filter((s) =>
      s.scope === "deno" && s.kind === SPAN_KIND.server && attr(s, "url.path") === "/readyz"
    );
    assert.ok(probes.length > 0, "HTTP server spans for GET /readyz");
    assert.ok(probes.every((s) => attr(s, "http.request.method") === "GET"));
    // The last probe answered 200 (Deno records the status code as a string).
    assert.ok(probes.some((s) => String(attr(s, "http.response.status_code")) === "200"));
  },
);

Deno.test("withSpan passes results and errors through untouched", async () => {
  assert.equal(await withSpan("t", { a: 1 }, () => Promise.resolve(42)), 42);
  const boom = new Error("boom");
  await assert.rejects(withSpan("t", {}, () => Promise.reject(boom)), (e) => e === boom);
});

Deno.test("deploy/otel/collector.yaml: OTLP in, every pipeline's components defined", async () => {
  const config = parse(await Deno.readTextFile(new URL("../deploy/otel/collector.yaml", import.meta.url)));
  assert.deepEqual(Object.keys(config.receivers.otlp.protocols).sort(), ["grpc", "http"]);
  assert.match(config.receivers.otlp.protocols.http.endpoint, /:4318$/);
  const pipelines = config.service.pipelines;
  assert.deepEqual(Object.keys(pipelines).sort(), ["logs", "metrics", "traces"]);
  for (const [name, p] of Object.entries<Record<string, string[]>>(pipelines)) {
    for (const kind of ["receivers", "processors", "exporters"]) {
      for (const id of p[kind] ?? []) assert.ok(id in config[kind], `${name}: ${kind} ${id} is defined`);
    }
    assert.ok(p.exporters.length > 0, `${name} exports somewhere`);
  }
  assert.ok(
    pipelines.traces.exporters.some((e: string) => e.startsWith("otlp")),
    "traces go to an OTLP backend",
  );
  for (const ext of config.service.extensions ?? []) assert.ok(ext in config.extensions, `extension ${ext}`);
});
