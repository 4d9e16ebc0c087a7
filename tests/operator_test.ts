/**
 * The operator routes: the admin-token matrix on every route, the audit trail
 * and the status document, against a real service.
 */
import assert from "node:assert/strict";
import { isLoopback, tokensMatch } from "../src/http/admin_auth.ts";
import { startShopifySandbox } from "../src/sandbox/shopify/sandbox.ts";
import { integration, sale, startHarness, waitFor } from "./helpers.ts";

const TOKEN = "operator-token-0123456789";

/** Every operator route with a request that is valid apart from auth. */
const ROUTES: { method: string; path: string; body?: unknown }[] = [
  { method: "GET", path: "/status" },
  { method: "GET", path: "/changes?limit=5" },
  { method: "POST", path: "/resync", body: { skus: ["REMERA-001"], dry_run: true } },
  { method: "GET", path: "/resync/00000000-0000-4000-8000-000000000000" },
  { method: "GET", path: "/dlq?limit=5" },
  { method: "POST", path: "/dlq/replay", body: { reason: "no-such-reason" } },
];

async function call(base: string, route: (typeof ROUTES)[number], token?: string): Promise<Response> {
  return await fetch(`${base}${route.path}`, {
    method: route.method,
    headers: {
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...(route.body ? { "content-type": "application/json" } : {}),
    },
    body: route.body ? JSON.stringify(route.body) : undefined,
  });
}

Deno.test("tokensMatch compares whole tokens (any length) and isLoopback knows loopback", async () => {
  assert.equal(await tokensMatch(TOKEN, TOKEN), true);
  assert.equal(await tokensMatch(TOKEN.slice(0, -1), TOKEN), false, "a prefix is not the token");
  assert.equal(await tokensMatch(TOKEN + "x", TOKEN), false);
  assert.equal(await tokensMatch("", TOKEN), false);
  for (const h of ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "::ffff:127.0.0.1"]) assert.ok(isLoopback(h), h);
  for (const h of ["10.0.0.1", "0.0.0.0", "::", "192.168.1.127", undefined]) {
    assert.ok(!isLoopback(h), String(h));
  }
});

integration(
  "with ADMIN_TOKEN: every operator route is 401 without a token, 403 with a wrong one, open with it",
  async () => {
    const h = await startHarness({ ADMIN_TOKEN: TOKEN, CHANNELS: "shopify" });
    try {
      for (const route of ROUTES) {
        const none = await call(h.service.url, route);
        assert.equal(none.status, 401, `${route.method} ${route.path} without a token`);
        assert.match(none.headers.get("www-authenticate") ?? "", /Bearer/);
        assert.match((await none.json()).message, /Authorization: Bearer/);
        const wrong = await call(h.service.url, route, "operator-token-0123456788");
        assert.equal(wrong.status, 403, `${route.method} ${route.path} with a wrong token`);
        await wrong.body?.cancel();
        const right = await call(h.service.url, route, TOKEN);
        assert.ok(
          ![401, 403].includes(right.status),
          `${route.method} ${route.path} with the token: ${right.status}`,
        );
        await right.body?.cancel();
      }
      // The open routes stay open.
      for (const path of ["/healthz", "/readyz", "/metrics", "/"]) {
        const r = await fetch(`${h.service.url}${path}`);
        assert.ok(r.status === 200 || r.status === 503, path);
        await r.body?.cancel();
      }
    } finally {
      await h.close();
    }
  },
);

integration(
  "without ADMIN_TOKEN: open to loopback in sandbox mode, 403 saying how to enable them otherwise",
  async () => {
    const sandboxed = await startHarness({ CHANNELS: "shopify" });
    try {
      for (const route of ROUTES) {
        const r = await call(sandboxed.service.url, route);
        assert.ok(
          ![401, 403].includes(r.status),
          `${route.method} ${route.path} in sandbox mode: ${r.status}`,
        );
        await r.body?.cancel();
      }
    } finally {
      await sandboxed.close();
    }
    const shop = await startShopifySandbox();
    const live = await startHarness({
      CHANNELS: "shopify",
      SHOPIFY_URL: shop.url,
      SHOPIFY_TOKEN: shop.token,
    });
    try {
      for (const route of ROUTES) {
        const r = await call(live.service.url, route);
        assert.equal(
          r.status,
          403,
          `${route.method} ${route.path} with real marketplaces and no ADMIN_TOKEN`,
        );
        const body = await r.json();
        assert.equal(body.error, "operator_routes_disabled");
        assert.match(body.message, /set ADMIN_TOKEN/);
      }
    } finally {
      await live.close();
      await shop.close();
    }
  },
);

integration(
  "GET /changes: filters, newest first, cursor paging, and a 400 naming a bad parameter",
  async () => {
    const h = await startHarness({ ADMIN_TOKEN: TOKEN, CHANNELS: "shopify" });
    const get = async (query: string) => {
      const r = await fetch(`${h.service.url}/changes?${query}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      return { status: r.status, body: await r.json() };
    };
    try {
      const skus = ["AUDIT-A", "AUDIT-B", "AUDIT-C"];
      for (let i = 0; i < 9; i++) {
        await h.publish(
          sale({
            event_id: `audit-${i}`,
            items: [{ producto_id: `p-${i % 3}`, producto_sku: skus[i % 3], cantidad: 1 + i }],
          }),
          { messageId: `audit-${i}` },
        );
      }
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from stock_change`)[0].n === 9,
        "9 changes",
      );
      const bySku = await get("sku=AUDIT-B");
      assert.equal(bySku.status, 200);
      const ids = (r: { changes: { id: string }[] }) => r.changes.map((c) => Number(c.id));
      assert.deepEqual(
        bySku.body.changes.map((c: { event_id: string }) => c.event_id).sort(),
        ["audit-1", "audit-4", "audit-7"],
      );
      assert.deepEqual(
        ids(bySku.body),
        [...ids(bySku.body)].sort((a, b) => b - a),
        "newest (highest id) first",
      );
      const seven = bySku.body.changes.find((c: { event_id: string }) => c.event_id === "audit-7");
      assert.equal(seven.delta, -8);
      assert.equal(seven.status, "pending");
      assert.equal(seven.channel, "shopify");
      // Pages of 4 cover all 9 once, newest first.
      const seen: { id: number; event_id: string }[] = [];
      let cursor = "";
      for (let page = 0; page < 5; page++) {
        const r = await get(`status=pending&limit=4${cursor ? `&cursor=${cursor}` : ""}`);
        assert.ok(r.body.changes.length <= 4);
        seen.push(
          ...r.body.changes.map((c: { id: string; event_id: string }) => ({
            id: Number(c.id),
            event_id: c.event_id,
          })),
        );
        if (!r.body.next_cursor) break;
        cursor = r.body.next_cursor;
      }
      assert.deepEqual(seen.map((c) => c.event_id).sort(), Array.from({ length: 9 }, (_, i) => `audit-${i}`));
      assert.deepEqual(seen.map((c) => c.id), seen.map((c) => c.id).sort((a, b) => b - a));
      assert.equal((await get("status=applied")).body.changes.length, 0);
      const bad = await get("status=done");
      assert.equal(bad.status, 400);
      assert.match(bad.body.message, /^status:/);
      const unknown = await get("colour=red");
      assert.equal(unknown.status, 400);
      assert.match(unknown.body.message, /colour/);
    } finally {
      await h.close();
    }
  },
);

integration("GET /status: queue, backlog and the last failures with their reasons", async () => {
  const h = await startHarness({ ADMIN_TOKEN: TOKEN, CHANNELS: "shopify", DISPATCH_ENABLED: "true" });
  try {
    await h.publish(
      sale({
        event_id: "status-bad-sku",
        items: [{ producto_id: "p-x", producto_sku: "NO-SUCH-SKU", cantidad: 1 }],
      }),
      { messageId: "status-bad-sku" },
    );
    await h.publish(sale({ event_id: "status-ok" }), { messageId: "status-ok" });
    const status = await waitFor(async () => {
      const r = await fetch(`${h.service.url}/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
      const body = await r.json();
      return body.failed_total === 1 && body.channels.shopify.applied_per_minute.at(-1).count === 1
        ? body
        : undefined;
    }, "one failure and one applied change");
    assert.equal(status.mode, "sandbox");
    assert.equal(status.queue.name, h.config.QUEUE);
    assert.equal(status.queue.consumers, 1);
    assert.equal(status.queue.depth, 0);
    const shopify = status.channels.shopify;
    assert.equal(shopify.healthy, true);
    assert.deepEqual(shopify.backlog, { pending: 0, sending: 0, failed: 1 });
    assert.equal(shopify.applied_per_minute.length, 60);
    assert.equal(shopify.budget.max, 2000);
    assert.equal(shopify.last_errors[0].reason, "sku_not_found");
    assert.equal(shopify.last_errors[0].event_id, "status-bad-sku");
    assert.equal(status.last_errors[0].sku, "NO-SUCH-SKU");
    await waitFor(async () => {
      const r = await fetch(`${h.service.url}/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
      return (await r.json()).queue.dead_letters === 1;
    }, "the DLQ copy counted");
  } finally {
    await h.close();
  }
});
