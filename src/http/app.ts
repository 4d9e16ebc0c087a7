/**
 * The HTTP surface (docs/DESIGN.md §7): liveness, readiness and Prometheus metrics,
 * open to all; the operator routes (status, audit trail, resync, DLQ) behind
 * the admin token (src/http/operator.ts).
 */
import { Hono, type MiddlewareHandler } from "hono";
import type { Registry } from "prom-client";
import { logger } from "../log.ts";
import type { CheckResult } from "../model/health.ts";
import type { InboundRoute } from "../sync/channel.ts";
import { mountOperatorRoutes, type OperatorDeps } from "./operator.ts";

const log = logger("http");

/** What the HTTP layer needs from the service. */
export interface HttpDeps {
  /** Named readiness checks: broker, consumer, postgres, redis, … */
  readiness(): Promise<Record<string, CheckResult>>;
  registry: Registry;
  version: string;
  /** Refreshes gauges that need a probe (dependency up/down) before a scrape. */
  beforeScrape?: () => Promise<unknown>;
  /** Operator routes; omitted in tests of the open routes only. */
  operator?: OperatorDeps;
  /** A channel's inbound routes (order webhooks), looked up per request: channels plug in after HTTP starts. */
  inbound?(channel: string): readonly InboundRoute[] | undefined;
}

/** Builds the Hono app. Pure: no listening, so tests can call `app.request()`. */
export function createApp(deps: HttpDeps): Hono {
  const app = new Hono();

  app.get("/healthz", (c) => c.json({ status: "ok", version: deps.version }));

  app.get("/readyz", async (c) => {
    const checks = await deps.readiness();
    const down = Object.entries(checks).filter(([, r]) => !r.ok).map(([name]) => name);
    return c.json({ ready: down.length === 0, down, checks }, down.length === 0 ? 200 : 503);
  });

  app.get("/metrics", async (c) => {
    await deps.beforeScrape?.().catch(() => {});
    const body = await deps.registry.metrics();
    return c.body(body, 200, { "content-type": deps.registry.contentType });
  });

  if (deps.operator) mountOperatorRoutes(app, deps.operator);

  // A channel's own routes: POST /webhooks/shopify, /webhooks/<channel>/<path>; the handler authenticates the caller.
  const inbound: MiddlewareHandler = async (c, next) => {
    const path = c.req.param("path") ?? "";
    const route = deps.inbound?.(c.req.param("channel") ?? "")?.find((r) =>
      r.method === c.req.method && r.path === path
    );
    if (!route) return await next();
    return await route.handle(c.req.raw);
  };
  app.all("/webhooks/:channel", inbound);
  app.all("/webhooks/:channel/:path{.+}", inbound);

  app.notFound((c) =>
    c.json({ error: "not_found", message: `no route for ${c.req.method} ${c.req.path}` }, 404)
  );
  app.onError((error, c) => {
    // The details go to the log, not to whoever asked.
    log.error("HTTP {method} {path} failed: {error}", {
      method: c.req.method,
      path: c.req.path,
      error: error.message,
    });
    return c.json({ error: "internal_error", message: "internal error; see the service log" }, 500);
  });
  return app;
}
