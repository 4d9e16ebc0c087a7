/**
 * The MercadoLibre sandbox's orders over real HTTP: a sale lowers the user product's stock
 * like MeLi's, a cancellation puts it back, `GET /orders/{id}` and `GET /orders/search` answer
 * like MeLi's (our seller's orders only), and each change is notified on `orders_v2` in MeLi's
 * shape, re-sent with the same `_id` until the callback answers 200.
 */
import assert from "node:assert/strict";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { type MeliSandbox, startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { waitFor } from "./helpers.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const catalog = defaultCatalog();

async function get(sb: MeliSandbox, path: string, token: string | null = sb.staticToken) {
  const res = await fetch(`${sb.url}${path}`, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.status, body: await res.json() as Json };
}

async function control(sb: MeliSandbox, path: string, body: unknown) {
  const res = await fetch(`${sb.url}/__sandbox/${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() as Json };
}

/** The first listing of a product without variations that has stock. */
function plainListing(sb: MeliSandbox) {
  const l = sb.listings.find((l) => l.variationId === null && (sb.quantityOf(l.productoId) ?? 0) >= 3);
  if (!l) throw new Error("no plain listing with stock");
  return l;
}

/** A callback URL that records what it receives and answers with `status()`. */
function callback(status: () => number = () => 200) {
  const received: Json[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    received.push({ contentType: req.headers.get("content-type"), body: JSON.parse(await req.text()) });
    return new Response(null, { status: status() });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/hook`, received, close: () => server.shutdown() };
}

Deno.test("sandbox orders: a sale lowers the item and its user product; cancelling puts the units back", async () => {
  const sb = await startMeliSandbox({ catalog });
  try {
    const l = plainListing(sb);
    const before = sb.quantityOf(l.productoId)!;
    const upBefore = sb.userProductStock(l.userProductId)!;
    const sold = await control(sb, "orders", { items: [{ item_id: l.itemId, quantity: 2 }] });
    assert.equal(sold.status, 201);
    assert.equal(sold.body.status, "paid");
    assert.equal(sold.body.seller.id, sb.userId);
    assert.deepEqual(sold.body.order_items.map((i: Json) => [i.item.id, i.item.seller_sku, i.quantity]), [
      [l.itemId, l.sku, 2],
    ]);
    assert.equal(sb.quantityOf(l.productoId), before - 2);
    const upAfter = sb.userProductStock(l.userProductId)!;
    assert.equal(upAfter.locations.reduce((s, x) => s + x.quantity, 0), before - 2);
    assert.ok(upAfter.version > upBefore.version, "a sale moves the user product's x-version");
    const item = sb.item(l.itemId) as Json;
    assert.equal(item.sold_quantity, 2);

    const cancelled = await control(sb, `orders/${sold.body.id}/cancel`, {});
    assert.equal(cancelled.status, 200);
    assert.equal(cancelled.body.status, "cancelled");
    assert.equal(sb.quantityOf(l.productoId), before);
    assert.equal((await control(sb, `orders/${sold.body.id}/cancel`, {})).status, 400, "cancelled once only");
  } finally {
    await sb.close();
  }
});

Deno.test("sandbox orders: refuses what MeLi would not sell", async () => {
  const sb = await startMeliSandbox({ catalog });
  try {
    const l = plainListing(sb);
    const have = sb.quantityOf(l.productoId)!;
    const tooMany = await control(sb, "orders", { items: [{ item_id: l.itemId, quantity: have + 1 }] });
    assert.equal(tooMany.status, 400);
    assert.equal(tooMany.body.error, "item.out_of_stock");
    assert.equal((await control(sb, "orders", { items: [{ item_id: "MLA1", quantity: 1 }] })).status, 404);
    assert.equal((await control(sb, "orders", { items: [] })).status, 400);
    assert.equal((await control(sb, "orders", { items: [{ item_id: l.itemId, quantity: 0 }] })).status, 400);
    const withVariations = sb.listings.find((x) => x.variationId !== null)!;
    const noVariation = await control(sb, "orders", {
      items: [{ item_id: withVariations.itemId, quantity: 1 }],
    });
    assert.equal(noVariation.status, 400, "an item with variations is bought by variation");
    sb.setItem(l.itemId, { status: "paused" });
    assert.equal((await control(sb, "orders", { items: [{ item_id: l.itemId, quantity: 1 }] })).status, 400);
    assert.equal(sb.quantityOf(l.productoId), have, "nothing refused moved the stock");
  } finally {
    await sb.close();
  }
});

Deno.test("sandbox orders: GET /orders/{id} is the seller's (or the buyer's) only", async () => {
  const sb = await startMeliSandbox({ catalog, otherSellers: [{ userId: 555, catalog }] });
  try {
    const ours = sb.sell({ items: [{ item_id: plainListing(sb).itemId, quantity: 1 }] });
    const got = await get(sb, `/orders/${ours.id}`);
    assert.equal(got.status, 200);
    assert.equal(got.body.id, ours.id);
    assert.match(got.body.date_last_updated, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}-03:00$/);
    assert.equal((await get(sb, `/orders/${ours.id}`, null)).status, 401);
    assert.equal((await get(sb, "/orders/2000009999999999")).status, 404);
    assert.equal((await get(sb, "/orders/abc")).status, 400);

    const theirItem = sb.itemsOf(555)[0];
    const theirs = sb.sell({ items: [{ item_id: theirItem, quantity: 1 }] });
    const forbidden = await get(sb, `/orders/${theirs.id}`);
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.body.error, "forbidden");
    // Our seller bought from them: the purchase is readable, and its seller is not us.
    const bought = sb.sell({ items: [{ item_id: theirItem, quantity: 1 }], buyer_id: sb.userId });
    const asBuyer = await get(sb, `/orders/${bought.id}`);
    assert.equal(asBuyer.status, 200);
    assert.equal(asBuyer.body.seller.id, 555);
  } finally {
    await sb.close();
  }
});

Deno.test("sandbox orders: /orders/search filters by last update, sorts by creation, pages", async () => {
  let clock = Date.parse("2026-12-01T12:00:00Z");
  const sb = await startMeliSandbox({ catalog, now: () => clock, otherSellers: [{ userId: 555, catalog }] });
  try {
    const l = plainListing(sb);
    const first = sb.sell({ items: [{ item_id: l.itemId, quantity: 1 }] });
    clock += 60_000;
    const second = sb.sell({ items: [{ item_id: l.itemId, quantity: 1 }] });
    sb.sell({ items: [{ item_id: sb.itemsOf(555)[0], quantity: 1 }] }); // another seller's
    clock += 60_000;
    sb.cancelOrder(first.id); // updated last, created first
    const all = await get(sb, `/orders/search?seller=${sb.userId}&sort=date_asc`);
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.results.map((o: Json) => o.id), [first.id, second.id]);
    assert.deepEqual(all.body.paging, { total: 2, offset: 0, limit: 50 });

    const since = new Date(Date.parse("2026-12-01T12:01:30Z")).toISOString();
    const updated = await get(sb, `/orders/search?seller=${sb.userId}&order.date_last_updated.from=${since}`);
    assert.deepEqual(updated.body.results.map((o: Json) => [o.id, o.status]), [[first.id, "cancelled"]]);
    const offset = encodeURIComponent("2026-12-01T09:00:30.000-03:00");
    const withOffset = await get(
      sb,
      `/orders/search?seller=${sb.userId}&order.date_last_updated.from=${offset}`,
    );
    assert.equal(withOffset.body.paging.total, 2, "an offset date is the same instant");

    const page = await get(sb, `/orders/search?seller=${sb.userId}&sort=date_desc&limit=1&offset=1`);
    assert.deepEqual(page.body.results.map((o: Json) => o.id), [first.id]);
    assert.equal(page.body.paging.total, 2);

    assert.equal((await get(sb, "/orders/search")).status, 400, "a filter is required");
    assert.equal((await get(sb, "/orders/search?seller=555")).status, 403);
    assert.equal((await get(sb, `/orders/search?seller=${sb.userId}&limit=52`)).status, 400);
    assert.equal((await get(sb, `/orders/search?seller=${sb.userId}&sort=updated`)).status, 400);
    assert.equal((await get(sb, `/orders/search?seller=${sb.userId}&q=x`)).status, 400);
    const badDate = await get(
      sb,
      `/orders/search?seller=${sb.userId}&order.date_last_updated.from=yesterday`,
    );
    assert.equal(badDate.status, 400);
  } finally {
    await sb.close();
  }
});

Deno.test("sandbox orders: orders_v2 notifications in MeLi's shape, re-sent with the same _id until 200", async () => {
  let answer = 500;
  const hook = callback(() => answer);
  const sb = await startMeliSandbox({
    catalog,
    notificationUrl: hook.url,
    notificationRetryDelaysMs: [50, 50, 50],
    otherSellers: [{ userId: 555, catalog }],
  });
  try {
    const order = sb.sell({ items: [{ item_id: plainListing(sb).itemId, quantity: 1 }] });
    await waitFor(() => hook.received.length >= 2, "a re-send");
    answer = 200;
    await waitFor(() => sb.notifications().some((a) => a.status === 200), "a delivered notification");
    const [one, two] = hook.received;
    assert.equal(one.contentType, "application/json");
    assert.deepEqual(Object.keys(one.body).sort(), [
      "_id",
      "application_id",
      "attempts",
      "received",
      "resource",
      "sent",
      "topic",
      "user_id",
    ]);
    assert.equal(one.body.resource, `/orders/${order.id}`);
    assert.equal(one.body.topic, "orders_v2");
    assert.equal(one.body.user_id, sb.userId);
    assert.equal(typeof one.body.application_id, "number");
    assert.equal(one.body.attempts, 1);
    assert.equal(two.body._id, one.body._id, "a re-send is the same notification");
    assert.equal(two.body.attempts, 2);
    const sentSoFar = hook.received.length;

    // Another seller's order is not ours to hear of; a paused feed sends nothing.
    sb.sell({ items: [{ item_id: sb.itemsOf(555)[0], quantity: 1 }] });
    sb.pauseNotifications(true);
    sb.cancelOrder(order.id);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(hook.received.length, sentSoFar);
    sb.pauseNotifications(false);
    sb.cancelOrder(sb.sell({ items: [{ item_id: plainListing(sb).itemId, quantity: 1 }] }).id);
    await waitFor(
      () => hook.received.length >= sentSoFar + 2,
      "the notifications of a sale and its cancellation",
    );
    assert.ok(hook.received.slice(sentSoFar).every((n) => n.body._id !== one.body._id));
  } finally {
    await sb.close();
    await hook.close();
  }
});
