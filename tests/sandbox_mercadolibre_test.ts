/**
 * The MercadoLibre sandbox over real HTTP: it must behave like MeLi's API (OAuth
 * rotation, Bearer-only auth, rate limit, strict item updates, item status rules,
 * error shapes) and inject each fault exactly as configured.
 */
import assert from "node:assert/strict";
import { buildCatalog, defaultCatalog, parseCatalog } from "../src/sandbox/catalog.ts";
import {
  type MeliSandbox,
  type MeliSandboxOptions,
  startMeliSandbox,
} from "../src/sandbox/mercadolibre/sandbox.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

interface Answer {
  status: number;
  body: Json;
  headers: Headers;
}

interface CallOptions {
  /** Bearer token; the static token by default, null for none. */
  token?: string | null;
  json?: unknown;
  /** Raw body text (sent as JSON content type). */
  raw?: string;
  /** More request headers (`x-version`). */
  headers?: Record<string, string>;
}

async function call(
  sb: MeliSandbox,
  method: string,
  path: string,
  options: CallOptions = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  const token = options.token === undefined ? sb.staticToken : options.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.json !== undefined || options.raw !== undefined) {
    headers["content-type"] = "application/json";
    body = options.raw ?? JSON.stringify(options.json);
  }
  const res = await fetch(`${sb.url}${path}`, { method, headers, body });
  const text = await res.text();
  let parsed: Json = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, body: parsed, headers: res.headers };
}

async function refresh(sb: MeliSandbox, fields: Record<string, string>, asJson = false): Promise<Answer> {
  const res = await fetch(`${sb.url}/oauth/token`, {
    method: "POST",
    headers: { "content-type": asJson ? "application/json" : "application/x-www-form-urlencoded" },
    body: asJson ? JSON.stringify(fields) : new URLSearchParams(fields).toString(),
  });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

function grant(sb: MeliSandbox, refreshToken = sb.currentRefreshToken()): Record<string, string> {
  return {
    grant_type: "refresh_token",
    client_id: sb.clientId,
    client_secret: sb.clientSecret,
    refresh_token: refreshToken,
  };
}

async function withSandbox(fn: (sb: MeliSandbox) => Promise<void>, options: MeliSandboxOptions = {}) {
  const sb = await startMeliSandbox(options);
  try {
    await fn(sb);
  } finally {
    await sb.close();
  }
}

/** A settable clock. */
function clock(start = Date.UTC(2026, 0, 15, 12)) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

const CATALOG = defaultCatalog();
function product(sku: string, nth = 0) {
  const p = CATALOG.products.filter((x) => x.sku === sku)[nth];
  assert.ok(p, `catalog has ${sku}`);
  return p;
}
function listing(sb: MeliSandbox, sku: string, nth = 0) {
  const l = sb.listingFor(product(sku, nth).producto_id);
  assert.ok(l, `listing of ${sku}`);
  return l;
}
const search = (sb: MeliSandbox, sku: string) =>
  call(sb, "GET", `/users/${sb.userId}/items/search?${new URLSearchParams({ seller_sku: sku })}`);

const INVALID_TOKEN = { message: "invalid access token", error: "unauthorized", status: 401, cause: [] };
const INVALID_GRANT = {
  error: "invalid_grant",
  error_description:
    "Error validating grant. Your authorization code or refresh token may be expired or it was already used",
  message:
    "Error validating grant. Your authorization code or refresh token may be expired or it was already used",
  status: 400,
  cause: [],
};

Deno.test("oauth: a refresh token works once and rotates; reusing it is invalid_grant", async () => {
  await withSandbox(async (sb) => {
    const first = sb.currentRefreshToken();
    assert.match(first, /^TG-[0-9a-f]{24}-123456789$/);
    const ok = await refresh(sb, grant(sb));
    assert.equal(ok.status, 200);
    assert.deepEqual(Object.keys(ok.body).sort(), [
      "access_token",
      "expires_in",
      "refresh_token",
      "scope",
      "token_type",
      "user_id",
    ]);
    assert.match(ok.body.access_token, new RegExp(`^APP_USR-${sb.clientId}-\\d{6}-[0-9a-f]{32}-123456789$`));
    assert.equal(ok.body.token_type, "Bearer");
    assert.equal(ok.body.expires_in, 21600);
    assert.equal(ok.body.scope, "offline_access read write");
    assert.equal(ok.body.user_id, 123456789);
    assert.notEqual(ok.body.refresh_token, first);
    assert.equal(sb.currentRefreshToken(), ok.body.refresh_token);
    const reused = await refresh(sb, grant(sb, first));
    assert.equal(reused.status, 400);
    assert.deepEqual(reused.body, INVALID_GRANT);
    const me = await call(sb, "GET", "/users/me", { token: ok.body.access_token });
    assert.equal(me.status, 200);
    // The rotated token works exactly once too.
    assert.equal((await refresh(sb, grant(sb))).status, 200);
    assert.equal((await refresh(sb, grant(sb, ok.body.refresh_token))).status, 400);
    assert.equal(sb.stats().refreshes, 2);
    assert.equal(sb.stats().refreshFailures, 2);
    assert.deepEqual(sb.invalidRequests(), []);
  });
});

Deno.test("oauth: access tokens expire after expires_in; older tokens stay valid until then", async () => {
  const c = clock();
  await withSandbox(async (sb) => {
    const a = (await refresh(sb, grant(sb))).body;
    assert.equal(a.expires_in, 60);
    c.advance(30_000);
    const b = (await refresh(sb, grant(sb))).body;
    assert.equal((await call(sb, "GET", "/users/me", { token: a.access_token })).status, 200);
    assert.equal((await call(sb, "GET", "/users/me", { token: b.access_token })).status, 200);
    c.advance(30_000);
    const expired = await call(sb, "GET", "/users/me", { token: a.access_token });
    assert.equal(expired.status, 401);
    assert.deepEqual(expired.body, {
      message: "expired access token",
      error: "unauthorized",
      status: 401,
      cause: [],
    });
    assert.equal((await call(sb, "GET", "/users/me", { token: b.access_token })).status, 200);
    sb.expireAccessTokens();
    assert.equal(
      (await call(sb, "GET", "/users/me", { token: b.access_token })).body.message,
      "expired access token",
    );
    // The static token never expires.
    c.advance(365 * 86_400_000);
    assert.equal((await call(sb, "GET", "/users/me")).status, 200);
    assert.equal(sb.stats().unauthorized, 2);
  }, { now: c.now, accessTokenTtlSeconds: 60 });
});

Deno.test("oauth: revokeTokens kills the grant and issued tokens until authorize()", async () => {
  await withSandbox(async (sb) => {
    const issued = (await refresh(sb, grant(sb))).body;
    sb.revokeTokens();
    const refused = await refresh(sb, grant(sb));
    assert.equal(refused.status, 400);
    assert.deepEqual(refused.body, INVALID_GRANT);
    assert.deepEqual(
      (await call(sb, "GET", "/users/me", { token: issued.access_token })).body,
      INVALID_TOKEN,
    );
    const beforeAuthorize = sb.currentRefreshToken();
    const fresh = sb.authorize();
    assert.notEqual(fresh, beforeAuthorize);
    assert.equal(sb.currentRefreshToken(), fresh);
    assert.equal((await refresh(sb, grant(sb, beforeAuthorize))).status, 400);
    const ok = await refresh(sb, grant(sb, fresh));
    assert.equal(ok.status, 200);
    assert.equal((await call(sb, "GET", "/users/me", { token: ok.body.access_token })).status, 200);
    // authorize() while a grant is valid also invalidates the older refresh token.
    const current = sb.currentRefreshToken();
    sb.authorize();
    assert.deepEqual((await refresh(sb, grant(sb, current))).body, INVALID_GRANT);
    assert.equal(sb.stats().refreshFailures, 3);
  });
});

Deno.test("oauth: client, grant type and parameters are checked; JSON bodies are accepted", async () => {
  await withSandbox(async (sb) => {
    const token = sb.currentRefreshToken();
    const wrong = await refresh(sb, { ...grant(sb), client_secret: "nope" });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error, "invalid_client");
    assert.equal(wrong.body.status, 400);
    // A wrong secret does not burn the refresh token.
    assert.equal(sb.currentRefreshToken(), token);
    const grantType = await refresh(sb, { ...grant(sb), grant_type: "authorization_code" });
    assert.equal(grantType.status, 400);
    assert.equal(grantType.body.error, "unsupported_grant_type");
    const { refresh_token: _, ...missing } = grant(sb);
    const noToken = await refresh(sb, missing);
    assert.deepEqual([noToken.status, noToken.body.error], [400, "invalid_request"]);
    assert.match(noToken.body.error_description, /refresh_token/);
    const inQuery = await fetch(`${sb.url}/oauth/token?${new URLSearchParams(grant(sb))}`, {
      method: "POST",
    });
    assert.deepEqual([inQuery.status, (await inQuery.json()).error], [400, "invalid_request"]);
    const viaJson = await refresh(sb, grant(sb), true);
    assert.equal(viaJson.status, 200);
    assert.deepEqual(sb.invalidRequests().map((r) => r.error), [
      "unsupported_grant_type",
      "invalid_request",
      "invalid_request",
    ]);
    assert.equal(sb.stats().invalid, 3);
    assert.equal(sb.stats().refreshFailures, 4);
  });
});

Deno.test("auth: Bearer header required; missing, wrong and query-string tokens are 401", async () => {
  await withSandbox(async (sb) => {
    const none = await call(sb, "GET", "/users/me", { token: null });
    assert.equal(none.status, 401);
    assert.deepEqual(none.body, INVALID_TOKEN);
    assert.deepEqual((await call(sb, "GET", "/users/me", { token: "APP_USR-1-2-3-4" })).body, INVALID_TOKEN);
    const query = await call(sb, "GET", `/users/me?access_token=${sb.staticToken}`);
    assert.equal(query.status, 401);
    assert.match(query.body.message, /Authorization: Bearer/);
    assert.equal(query.body.error, "unauthorized");
    const lower = await fetch(`${sb.url}/users/me`, {
      headers: { authorization: `bearer ${sb.staticToken}` },
    });
    assert.equal(lower.status, 200);
    await lower.body?.cancel();
    assert.equal(sb.stats().unauthorized, 3);
    assert.deepEqual(sb.invalidRequests().map((r) => r.path), ["/users/me"]);
  });
});

Deno.test("users: /users/me and own id answer the seller; other ids are 403", async () => {
  await withSandbox(async (sb) => {
    const me = await call(sb, "GET", "/users/me");
    assert.equal(me.status, 200);
    assert.equal(me.body.id, 987);
    assert.equal(me.body.site_id, "MLA");
    assert.deepEqual(me.body.tags, ["normal", "warehouse_management"]);
    assert.deepEqual((await call(sb, "GET", "/users/987")).body, me.body);
    const other = await call(sb, "GET", "/users/988");
    assert.equal(other.status, 403);
    assert.deepEqual(Object.keys(other.body).sort(), ["cause", "error", "message", "status"]);
    assert.equal((await call(sb, "GET", "/users/988/items/search?seller_sku=REMERA-001")).status, 403);
  }, { userId: 987, userTags: ["normal", "warehouse_management"] });
});

Deno.test("search: seller_sku is exact and case-sensitive, on items and variations", async () => {
  await withSandbox(async (sb) => {
    const remera = await search(sb, "REMERA-001");
    assert.equal(remera.status, 200);
    assert.deepEqual(remera.body.results, [listing(sb, "REMERA-001").itemId]);
    assert.equal(remera.body.seller_id, "123456789");
    assert.equal(remera.body.query, null);
    assert.deepEqual(remera.body.paging, { limit: 50, offset: 0, total: 1 });
    assert.ok(Array.isArray(remera.body.orders) && Array.isArray(remera.body.available_orders));
    // A variation's SELLER_SKU finds its item.
    assert.deepEqual((await search(sb, "JEAN-RECTO-40")).body.results, [listing(sb, "JEAN-RECTO-40").itemId]);
    assert.deepEqual((await search(sb, "REMERA-00")).body.results, []);
    assert.deepEqual((await search(sb, "BUZO-AZUL-M")).body.results, [listing(sb, "BUZO-AZUL-M").itemId]);
    assert.deepEqual((await search(sb, "buzo-azul-m")).body.results, [listing(sb, "buzo-azul-m").itemId]);
    const tricky = 'TAZA "BLEND": (XL) \\ NEGRA';
    assert.deepEqual((await search(sb, tricky)).body.results, [listing(sb, tricky).itemId]);
    // %20 instead of + for spaces decodes the same.
    const encoded = await call(
      sb,
      "GET",
      `/users/${sb.userId}/items/search?seller_sku=${encodeURIComponent(tricky)}`,
    );
    assert.deepEqual(encoded.body.results, [listing(sb, tricky).itemId]);
    assert.deepEqual((await search(sb, "GORRA-O'NEILL")).body.paging.total, 1);
    const mate = await search(sb, "MATE-IMP-01");
    assert.equal(mate.body.paging.total, 2);
    assert.deepEqual(mate.body.results, sb.listingsForSku("MATE-IMP-01").map((l) => l.itemId));
    assert.notEqual(mate.body.results[0], mate.body.results[1]);
    // Closed items are still found.
    sb.setItem(listing(sb, "REMERA-002").itemId, { status: "closed" });
    assert.equal((await search(sb, "REMERA-002")).body.paging.total, 1);
    assert.deepEqual((await search(sb, "NO-EXISTE")).body.results, []);
  });
});

Deno.test("search: paging over all the seller's items; bad limit is 400", async () => {
  await withSandbox(async (sb) => {
    const page = await call(sb, "GET", `/users/${sb.userId}/items/search?limit=5&offset=33`);
    // 40 products, 8 of them grouped into 3 items with variations: 35 items.
    assert.deepEqual(page.body.paging, { limit: 5, offset: 33, total: 35 });
    assert.equal(page.body.results.length, 2);
    const bad = await call(sb, "GET", `/users/${sb.userId}/items/search?limit=500`);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error, "bad_request");
    assert.equal(sb.invalidRequests().length, 1);
  });
});

Deno.test("items: ids are stable, quantities come from the chosen store, SKUs sit where MeLi puts them", async () => {
  const second = CATALOG.stores[1].tienda_id;
  await withSandbox(async (sb) => {
    const jean = listing(sb, "JEAN-RECTO-38");
    assert.equal(jean.itemId, "MLA1420000009");
    assert.equal(sb.listingFor(product("JEAN-RECTO-42").producto_id)?.itemId, jean.itemId);
    assert.equal(sb.quantityOf(product("JEAN-RECTO-38").producto_id), 28);
    const remera = listing(sb, "REMERA-001");
    assert.deepEqual(remera, {
      sku: "REMERA-001",
      productoId: product("REMERA-001").producto_id,
      itemId: "MLA1420000001",
      variationId: null,
      userProductId: "MLAU2000000001",
      itemIds: ["MLA1420000001"],
    });
    const plain = await call(sb, "GET", `/items/${remera.itemId}`);
    assert.equal(plain.status, 200);
    assert.equal(plain.body.user_product_id, "MLAU2000000001");
    assert.equal(plain.body.id, "MLA1420000001");
    assert.equal(plain.body.currency_id, "ARS");
    assert.equal(plain.body.available_quantity, 8);
    assert.equal(plain.body.status, "active");
    assert.deepEqual(plain.body.sub_status, []);
    assert.equal(plain.body.shipping.logistic_type, "cross_docking");
    assert.deepEqual(plain.body.variations, []);
    const sku = plain.body.attributes.find((a: Json) => a.id === "SELLER_SKU");
    assert.deepEqual([sku.name, sku.value_id, sku.value_name], ["SKU", null, "REMERA-001"]);
    const withVariations = await call(sb, "GET", `/items/${jean.itemId}`);
    assert.equal(withVariations.body.title, "Jean Recto");
    assert.equal(withVariations.body.available_quantity, 28 + 28 + 9);
    assert.equal(withVariations.body.variations.length, 3);
    assert.equal(withVariations.body.variations[0].id, jean.variationId);
    assert.equal(withVariations.body.variations[0].attributes, undefined);
    assert.equal(withVariations.body.attributes.some((a: Json) => a.id === "SELLER_SKU"), false);
    const all = await call(sb, "GET", `/items/${jean.itemId}?include_attributes=all`);
    assert.deepEqual(
      all.body.variations.map((v: Json) => v.attributes.find((a: Json) => a.id === "SELLER_SKU").value_name),
      ["JEAN-RECTO-38", "JEAN-RECTO-40", "JEAN-RECTO-42"],
    );
    assert.deepEqual(sb.item(jean.itemId), all.body);
    const picked = await call(sb, "GET", `/items/${jean.itemId}?attributes=id,available_quantity`);
    assert.deepEqual(picked.body, { id: jean.itemId, available_quantity: 65 });
    const missing = await call(sb, "GET", "/items/MLA999");
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, {
      message: "Item with id MLA999 not found",
      error: "not_found",
      status: 404,
      cause: [],
    });
    const multi = await call(sb, "GET", `/items?ids=${remera.itemId},MLA999`);
    assert.deepEqual(multi.body.map((r: Json) => r.code), [200, 404]);
    assert.deepEqual(sb.invalidRequests(), []);
  }, { tiendaId: second });
});

Deno.test("items: PUT stock on an item and on a variation; answers and quantityOf reflect it", async () => {
  await withSandbox(async (sb) => {
    const remera = listing(sb, "REMERA-001");
    const put = await call(sb, "PUT", `/items/${remera.itemId}`, { json: { available_quantity: 7 } });
    assert.equal(put.status, 200);
    assert.equal(put.body.id, remera.itemId);
    assert.equal(put.body.available_quantity, 7);
    assert.equal(sb.quantityOf(remera.productoId), 7);
    const jean = listing(sb, "JEAN-RECTO-40");
    const path = `/items/${jean.itemId}/variations/${jean.variationId}`;
    const v = await call(sb, "PUT", path, { json: { available_quantity: 3 } });
    assert.equal(v.status, 200);
    assert.equal(v.body.id, jean.variationId);
    assert.equal(v.body.available_quantity, 3);
    assert.equal(sb.quantityOf(jean.productoId), 3);
    assert.equal((await call(sb, "GET", `/items/${jean.itemId}`)).body.available_quantity, 13 + 3 + 35);
    // Several variations in one item PUT; every live variation listed, so none is deleted.
    const ids = sb.listings.filter((l) => l.itemId === jean.itemId).map((l) => l.variationId);
    const many = await call(sb, "PUT", `/items/${jean.itemId}`, {
      json: {
        variations: [{ id: ids[0], available_quantity: 1 }, { id: ids[1] }, {
          id: ids[2],
          available_quantity: 2,
        }],
      },
    });
    assert.equal(many.status, 200);
    assert.equal(many.body.available_quantity, 1 + 3 + 2);
    assert.deepEqual(sb.stats().putsByListing, {
      [remera.itemId]: 1,
      [`${jean.itemId}/${jean.variationId}`]: 1,
      [`${jean.itemId}/${ids[0]}`]: 1,
      [`${jean.itemId}/${ids[2]}`]: 1,
    });
    assert.equal(sb.stats().puts, 3);
    assert.deepEqual(sb.invalidRequests(), []);
  });
});

Deno.test("items: a variations list that leaves a variation out deletes it, as MeLi does", async () => {
  await withSandbox(async (sb) => {
    const [a, b] = sb.listings.filter((l) => l.itemId === listing(sb, "CINTURON-CUERO-90").itemId);
    const res = await call(sb, "PUT", `/items/${a.itemId}`, {
      json: { variations: [{ id: a.variationId }] },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.variations.map((v: Json) => v.id), [a.variationId]);
    assert.equal(sb.quantityOf(b.productoId), undefined);
    assert.deepEqual((await search(sb, b.sku)).body.results, []);
    const gone = await call(sb, "PUT", `/items/${b.itemId}/variations/${b.variationId}`, {
      json: { available_quantity: 1 },
    });
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error, "not_found");
  });
});

Deno.test("items: malformed updates are 400 in MeLi's shape, recorded, and change nothing", async () => {
  await withSandbox(async (sb) => {
    const remera = listing(sb, "REMERA-001");
    const jean = listing(sb, "JEAN-RECTO-38");
    const item = `/items/${remera.itemId}`;
    const unknown = await call(sb, "PUT", item, { json: { available_quantity: 1, stock: 1 } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.error, "body.invalid_fields");
    assert.equal(unknown.body.status, 400);
    assert.match(unknown.body.message, /\[stock\]/);
    assert.deepEqual(unknown.body.cause[0].references, ["body.stock"]);
    const negative = await call(sb, "PUT", item, { json: { available_quantity: -1 } });
    assert.equal(negative.status, 400);
    assert.deepEqual([negative.body.message, negative.body.error], ["Validation error", "validation_error"]);
    assert.equal(negative.body.cause.length, 1);
    assert.equal(negative.body.cause[0].code, "item.available_quantity.invalid");
    assert.equal(negative.body.cause[0].type, "error");
    assert.deepEqual(negative.body.cause[0].references, ["item.available_quantity"]);
    assert.equal((await call(sb, "PUT", item, { json: { available_quantity: 1.5 } })).status, 400);
    assert.equal((await call(sb, "PUT", item, { json: { available_quantity: "5" } })).status, 400);
    assert.equal(
      (await call(sb, "PUT", item, { json: { status: "deleted" } })).body.cause[0].code,
      "item.status.invalid",
    );
    assert.equal((await call(sb, "PUT", item, { raw: "{not json" })).body.error, "body.invalid");
    assert.equal((await call(sb, "PUT", item, { json: { pictures: [] } })).body.error, "sandbox_unsupported");
    const itemLevel = await call(sb, "PUT", `/items/${jean.itemId}`, { json: { available_quantity: 5 } });
    assert.equal(itemLevel.status, 400);
    assert.equal(itemLevel.body.error, "validation_error");
    assert.equal(itemLevel.body.cause[0].code, "item.available_quantity.has_variations");
    const variation = `/items/${jean.itemId}/variations/${jean.variationId}`;
    const badVariation = await call(sb, "PUT", variation, { json: { available_quantity: 2, sku: "x" } });
    assert.deepEqual([badVariation.status, badVariation.body.error], [400, "body.invalid_fields"]);
    const negVariation = await call(sb, "PUT", variation, { json: { available_quantity: -3 } });
    assert.deepEqual(negVariation.body.cause[0].references, ["variation.available_quantity"]);
    assert.equal(sb.invalidRequests().length, 10);
    assert.equal(sb.stats().invalid, 10);
    assert.deepEqual(sb.invalidRequests()[0].body, { available_quantity: 1, stock: 1 });
    assert.equal(sb.invalidRequests()[0].error, "body.invalid_fields");
    assert.equal(sb.quantityOf(remera.productoId), 4);
    assert.equal(sb.quantityOf(jean.productoId), 13);
    assert.equal(sb.stats().puts, 0);
  });
});

Deno.test("status: 0 stock pauses (out_of_stock); more stock does not reactivate; status active does", async () => {
  await withSandbox(async (sb) => {
    const l = listing(sb, "REMERA-003");
    const path = `/items/${l.itemId}`;
    const zero = await call(sb, "PUT", path, { json: { available_quantity: 0 } });
    assert.deepEqual([zero.body.status, zero.body.sub_status], ["paused", ["out_of_stock"]]);
    const more = await call(sb, "PUT", path, { json: { available_quantity: 5 } });
    assert.deepEqual([more.body.status, more.body.sub_status], ["paused", ["out_of_stock"]]);
    const active = await call(sb, "PUT", path, { json: { status: "active" } });
    assert.deepEqual([active.status, active.body.status, active.body.sub_status], [200, "active", []]);
    await call(sb, "PUT", path, { json: { available_quantity: 0 } });
    const refused = await call(sb, "PUT", path, { json: { status: "active" } });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, "bad_request");
    assert.equal(refused.body.cause[0].code, "item.status.out_of_stock");
    const both = await call(sb, "PUT", path, { json: { available_quantity: 4, status: "active" } });
    assert.deepEqual([both.status, both.body.status, both.body.available_quantity], [200, "active", 4]);
    // Paused by the seller stays as it is, out_of_stock or not.
    const paused = await call(sb, "PUT", path, { json: { status: "paused" } });
    assert.deepEqual([paused.body.status, paused.body.sub_status], ["paused", []]);
    const empty = await call(sb, "PUT", path, { json: { available_quantity: 0 } });
    assert.deepEqual([empty.body.status, empty.body.sub_status], ["paused", []]);
    // Refusals for the item's state are not malformed requests.
    assert.deepEqual(sb.invalidRequests(), []);
    // A product without stock in the seeding store starts paused.
    assert.equal((sb.item(listing(sb, "POLLERA-JEAN-S").itemId) as Json).status, "paused");
  });
});

Deno.test("status: MeLi-side sales apply the same rules; an item with variations pauses at total 0", async () => {
  await withSandbox(async (sb) => {
    const zapa = sb.listings.filter((l) => l.itemId === listing(sb, "ZAPA-URB-40").itemId);
    sb.setQuantity(zapa[0].productoId, 0);
    sb.setQuantity(zapa[2].productoId, 0);
    assert.equal((sb.item(zapa[0].itemId) as Json).status, "active");
    sb.setQuantity(zapa[1].productoId, 30);
    const last = await call(sb, "PUT", `/items/${zapa[1].itemId}/variations/${zapa[1].variationId}`, {
      json: { available_quantity: 0 },
    });
    assert.equal(last.status, 200);
    const item = sb.item(zapa[0].itemId) as Json;
    assert.deepEqual([item.status, item.sub_status, item.available_quantity], [
      "paused",
      ["out_of_stock"],
      0,
    ]);
    assert.equal(item.sold_quantity, 6 + 1 + 2);
    assert.throws(() => sb.setQuantity(zapa[0].productoId, -1), RangeError);
  });
});

Deno.test("rules: under_review, closed and Full refuse the write with MeLi's messages", async () => {
  await withSandbox(async (sb) => {
    const review = listing(sb, "BUZO-GRIS-L");
    sb.setItem(review.itemId, { status: "under_review", sub_status: ["forbidden"] });
    const r = await call(sb, "PUT", `/items/${review.itemId}`, { json: { available_quantity: 1 } });
    assert.equal(r.status, 403);
    assert.equal(r.body.error, "forbidden");
    assert.equal(
      r.body.message,
      `Item is under review and cannot be modified until MercadoLibre ends the review: ${review.itemId}`,
    );
    assert.equal(r.body.cause[0].code, "item.status.under_review");
    const closed = listing(sb, "BUZO-GRIS-XL");
    assert.equal(
      (await call(sb, "PUT", `/items/${closed.itemId}`, { json: { status: "closed" } })).status,
      200,
    );
    const c = await call(sb, "PUT", `/items/${closed.itemId}`, { json: { status: "active" } });
    assert.equal(c.status, 400);
    assert.equal(c.body.error, "field_not_updatable");
    assert.equal(
      c.body.message,
      `Cannot modify a closed item: ${closed.itemId} has status closed, which is final`,
    );
    const full = listing(sb, "ZAPA-URB-41");
    sb.setItem(full.itemId, { logistic_type: "fulfillment" });
    const f = await call(sb, "PUT", `/items/${full.itemId}/variations/${full.variationId}`, {
      json: { available_quantity: 1 },
    });
    assert.equal(f.status, 400);
    assert.equal(f.body.error, "field_not_updatable");
    assert.match(f.body.message, /managed by MercadoLibre Full/);
    assert.equal(f.body.cause[0].code, "item.available_quantity.fulfillment");
    // Full only owns the stock: a price change goes through.
    assert.equal(
      (await call(sb, "PUT", `/items/${full.itemId}`, { json: { price: 12345 } })).body.price,
      12345,
    );
    assert.equal(sb.quantityOf(review.productoId), 37);
    assert.equal(sb.quantityOf(full.productoId), 32);
    assert.equal(sb.stats().puts, 0);
    assert.deepEqual(sb.invalidRequests(), []);
  });
});

Deno.test("multi-origin seller (warehouse_management): stock PUTs answer 200 and are ignored", async () => {
  await withSandbox(async (sb) => {
    assert.deepEqual((await call(sb, "GET", "/users/me")).body.tags, ["normal", "warehouse_management"]);
    const l = listing(sb, "MOCHILA-URB");
    const put = await call(sb, "PUT", `/items/${l.itemId}`, { json: { available_quantity: 1, price: 999 } });
    assert.equal(put.status, 200);
    assert.equal(put.body.available_quantity, 28);
    assert.equal(put.body.price, 999);
    const v = listing(sb, "JEAN-RECTO-42");
    const vput = await call(sb, "PUT", `/items/${v.itemId}/variations/${v.variationId}`, {
      json: { available_quantity: 0 },
    });
    assert.deepEqual([vput.status, vput.body.available_quantity], [200, 35]);
    assert.equal(sb.quantityOf(l.productoId), 28);
    assert.equal(sb.quantityOf(v.productoId), 35);
    assert.equal(sb.stats().puts, 0);
  }, { userTags: ["normal", "warehouse_management"] });
});

Deno.test("rate limit: 429 after ratePerSecond requests, no Retry-After, refills over time", async () => {
  const c = clock();
  await withSandbox(async (sb) => {
    for (let i = 0; i < 5; i++) assert.equal((await call(sb, "GET", "/users/me")).status, 200);
    const limited = await call(sb, "GET", "/users/me");
    assert.equal(limited.status, 429);
    assert.deepEqual(limited.body, {
      message: "Too many requests",
      error: "too_many_requests",
      status: 429,
      cause: [],
    });
    assert.equal(limited.headers.get("retry-after"), null);
    // /oauth/token is not counted.
    assert.equal((await refresh(sb, grant(sb))).status, 200);
    c.advance(200); // one request's worth at 5/s
    assert.equal((await call(sb, "GET", "/users/me")).status, 200);
    assert.equal((await call(sb, "GET", "/users/me")).status, 429);
    c.advance(1000);
    for (let i = 0; i < 5; i++) assert.equal((await call(sb, "GET", "/users/me")).status, 200);
    assert.equal((await call(sb, "GET", "/users/me")).status, 429);
    assert.equal(sb.stats().rateLimited, 3);
    assert.equal(sb.stats().requests, 15);
  }, { now: c.now, ratePerSecond: 5 });
});

Deno.test("faults: errorRate 1 answers 5xx before applying; rateLimitAll answers 429", async () => {
  await withSandbox(async (sb) => {
    const l = listing(sb, "RINONERA");
    for (let i = 0; i < 6; i++) {
      const res = await call(sb, "PUT", `/items/${l.itemId}`, { json: { available_quantity: 1 } });
      assert.ok([500, 502, 503].includes(res.status), `status ${res.status}`);
      assert.equal(res.body.status, res.status);
      assert.deepEqual(res.body.cause, []);
    }
    assert.equal(sb.quantityOf(l.productoId), 7);
    assert.equal(sb.stats().errorsInjected, 6);
    assert.equal(sb.requestLog()[0].error, "injected_error");
    sb.setFaults({ errorRate: 0, rateLimitAll: true });
    assert.equal((await call(sb, "GET", "/users/me")).status, 429);
    assert.equal(sb.stats().rateLimited, 1);
  }, { faults: { errorRate: 1 } });
});

Deno.test("faults: lostResponseRate 1 applies the PUT then answers 502; GETs are unaffected", async () => {
  await withSandbox(async (sb) => {
    const l = listing(sb, "RINONERA");
    const res = await call(sb, "PUT", `/items/${l.itemId}`, { json: { available_quantity: 2 } });
    assert.equal(res.status, 502);
    assert.deepEqual(res.body, { message: "Bad Gateway", error: "bad_gateway", status: 502, cause: [] });
    assert.equal(sb.quantityOf(l.productoId), 2);
    assert.equal((await call(sb, "GET", `/items/${l.itemId}`)).status, 200);
    assert.equal(sb.stats().lostResponses, 1);
    assert.equal(sb.stats().puts, 1);
    assert.equal(sb.requestLog()[0].error, "injected_lost_response");
  }, { faults: { lostResponseRate: 1 } });
});

Deno.test("faults: conflictRate 1 is 409 without applying; invalid PUTs are still 400", async () => {
  await withSandbox(async (sb) => {
    const l = listing(sb, "RINONERA");
    const res = await call(sb, "PUT", `/items/${l.itemId}`, { json: { available_quantity: 2 } });
    assert.equal(res.status, 409);
    assert.equal(res.body.error, "conflict");
    assert.equal(res.body.status, 409);
    assert.equal(sb.quantityOf(l.productoId), 7);
    assert.equal(
      (await call(sb, "PUT", `/items/${l.itemId}`, { json: { available_quantity: -2 } })).status,
      400,
    );
    assert.deepEqual([sb.stats().conflicts, sb.stats().puts], [1, 0]);
  }, { faults: { conflictRate: 1 } });
});

Deno.test("faults: ignoreWritesRate 1 answers 200 with the unchanged item and applies nothing", async () => {
  await withSandbox(async (sb) => {
    const l = listing(sb, "RINONERA");
    const res = await call(sb, "PUT", `/items/${l.itemId}`, { json: { available_quantity: 2 } });
    assert.equal(res.status, 200);
    assert.equal(res.body.available_quantity, 7);
    const v = listing(sb, "JEAN-RECTO-38");
    const vres = await call(sb, "PUT", `/items/${v.itemId}/variations/${v.variationId}`, {
      json: { available_quantity: 0 },
    });
    assert.deepEqual([vres.status, vres.body.available_quantity], [200, 13]);
    assert.equal(sb.quantityOf(l.productoId), 7);
    assert.equal(sb.quantityOf(v.productoId), 13);
    assert.deepEqual([sb.stats().ignoredWrites, sb.stats().puts], [2, 0]);
  }, { faults: { ignoreWritesRate: 1 } });
});

Deno.test("faults: staleAnswerRate 1 applies the write but answers 200 with the item as it was", async () => {
  await withSandbox(async (sb) => {
    const l = listing(sb, "RINONERA");
    const res = await call(sb, "PUT", `/items/${l.itemId}`, { json: { available_quantity: 2 } });
    assert.deepEqual([res.status, res.body.available_quantity], [200, 7]);
    assert.equal(sb.quantityOf(l.productoId), 2);
    assert.deepEqual([sb.stats().staleAnswers, sb.stats().puts], [1, 1]);
  }, { faults: { staleAnswerRate: 1 } });
});

Deno.test("faults: latency delays every request; the same seed replays the same sequence", async () => {
  const statuses = async (sb: MeliSandbox) => {
    const out: number[] = [];
    for (let i = 0; i < 12; i++) out.push((await call(sb, "GET", "/users/me")).status);
    return out;
  };
  let first: number[] = [];
  await withSandbox(async (sb) => {
    first = await statuses(sb);
    assert.ok(first.includes(200) && first.some((s) => s >= 500), `a mix: ${first}`);
    sb.setFaults({ seed: 7 });
    assert.deepEqual(await statuses(sb), first);
    sb.setFaults({ errorRate: 0, latencyMs: 120 });
    const started = performance.now();
    assert.equal((await call(sb, "GET", "/users/me")).status, 200);
    assert.ok(performance.now() - started >= 115);
  }, { faults: { errorRate: 0.5, seed: 7 } });
  await withSandbox(async (sb) => assert.deepEqual(await statuses(sb), first), {
    faults: { errorRate: 0.5, seed: 7 },
  });
});

Deno.test("control: state, strict faults, token actions; not part of the API log", async () => {
  await withSandbox(async (sb) => {
    await call(sb, "PUT", `/items/${listing(sb, "RINONERA").itemId}`, { json: { available_quantity: 0 } });
    const state = await (await fetch(`${sb.url}/__sandbox/state`)).json();
    assert.equal(state.listings.length, 40);
    const rinonera = state.listings.find((l: Json) => l.sku === "RINONERA");
    assert.deepEqual([rinonera.available_quantity, rinonera.status, rinonera.sub_status], [0, "paused", [
      "out_of_stock",
    ]]);
    assert.equal(state.stats.puts, 1);
    const post = (path: string, body?: unknown) =>
      fetch(`${sb.url}/__sandbox/${path}`, {
        method: "POST",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    const bad = await post("faults", { errorRate: 2 });
    assert.equal(bad.status, 400);
    const badBody = await bad.json();
    assert.deepEqual([badBody.error, badBody.status, badBody.cause], ["bad_request", 400, []]);
    assert.match(badBody.message, /errorRate/);
    const unknown = await (await post("faults", { errorRatio: 0.1 })).json();
    assert.match(unknown.message, /errorRatio/);
    const good = await post("faults", { conflictRate: 0.25, seed: 3 });
    assert.equal(good.status, 200);
    assert.deepEqual(await good.json(), sb.faults());
    assert.equal(sb.faults().conflictRate, 0.25);
    assert.deepEqual(await (await fetch(`${sb.url}/__sandbox/faults`)).json(), sb.faults());
    assert.throws(() => sb.setFaults({ latencyMs: -1 }));
    const { refresh_token } = await (await post("authorize")).json();
    assert.equal(refresh_token, sb.currentRefreshToken());
    await (await post("revoke")).body?.cancel();
    assert.equal((await refresh(sb, grant(sb))).body.error, "invalid_grant");
    assert.equal((await fetch(`${sb.url}/__sandbox/nope`)).status, 404);
    assert.deepEqual(sb.requestLog().map((r) => r.path), [
      `/items/${listing(sb, "RINONERA").itemId}`,
      "/oauth/token",
    ]);
  });
});

Deno.test("routes: unknown path is 404 and wrong method 405, MeLi-shaped and recorded as invalid", async () => {
  await withSandbox(async (sb) => {
    const nf = await call(sb, "GET", "/sites/MLA/search?q=x");
    assert.equal(nf.status, 404);
    assert.deepEqual(nf.body, {
      message: "Route not found: GET /sites/MLA/search",
      error: "not_found",
      status: 404,
      cause: [],
    });
    const wrong = await call(sb, "POST", `/items/${listing(sb, "RINONERA").itemId}`, { json: {} });
    assert.equal(wrong.status, 405);
    assert.equal(wrong.body.error, "method_not_allowed");
    assert.equal(wrong.headers.get("allow"), "GET, PUT");
    const log = sb.requestLog();
    assert.deepEqual(log.map((r) => [r.method, r.path, r.query, r.status, r.error]), [
      ["GET", "/sites/MLA/search", "q=x", 404, "not_found"],
      ["POST", `/items/${listing(sb, "RINONERA").itemId}`, "", 405, "method_not_allowed"],
    ]);
    assert.equal(sb.invalidRequests().length, 2);
    assert.equal(typeof log[0].at, "number");
  });
});

Deno.test("catalog: meli_item groups products into one item; custom catalogs work without it", async () => {
  const catalog = buildCatalog({ skus: 4, stores: 2, seed: 5 });
  catalog.products[1].meli_item = "PAIR";
  catalog.products[2].meli_item = "PAIR";
  await withSandbox(async (sb) => {
    assert.deepEqual(sb.listings.map((l) => l.itemId), [
      "MLA1420000001",
      "MLA1420000002",
      "MLA1420000002",
      "MLA1420000003",
    ]);
    assert.deepEqual(sb.listings.map((l) => l.variationId === null), [true, false, false, true]);
    assert.equal(sb.tiendaId, catalog.stores[0].tienda_id);
    const pair = await search(sb, catalog.products[2].sku);
    assert.deepEqual(pair.body.results, ["MLA1420000002"]);
  }, { catalog: parseCatalog(catalog) });
  assert.throws(() => parseCatalog({ ...catalog, products: [{ ...catalog.products[0], meli_item: "" }] }));
  await assert.rejects(() => startMeliSandbox({ tiendaId: "11111111-0000-4000-8000-000000000000" }));
});

const scanPath = (sb: MeliSandbox, params: Record<string, string> = {}) =>
  `/users/${sb.userId}/items/search?${new URLSearchParams({ search_type: "scan", ...params })}`;

Deno.test('scan: pages follow scroll_id to an empty page with scroll_id ""; no offset; limit 1..100', async () => {
  await withSandbox(async (sb) => {
    const first = await call(sb, "GET", scanPath(sb, { limit: "15" }));
    assert.equal(first.status, 200);
    assert.deepEqual(Object.keys(first.body).sort(), ["paging", "results", "scroll_id", "seller_id"]);
    assert.deepEqual(first.body.paging, { limit: 15, total: 35 });
    assert.equal(first.body.seller_id, "123456789");
    const scrollId: string = first.body.scroll_id;
    assert.ok(scrollId.length > 0);
    const seen = [...first.body.results];
    for (const expected of [15, 5, 0]) {
      const next = await call(sb, "GET", scanPath(sb, { scroll_id: scrollId, limit: "15" }));
      assert.equal(next.status, 200);
      assert.equal(next.body.results.length, expected);
      assert.equal(next.body.scroll_id, expected === 0 ? "" : scrollId);
      seen.push(...next.body.results);
    }
    assert.deepEqual(seen, sb.itemsOf(sb.userId));
    // The default page is 50: every item at once, then the end.
    const all = await call(sb, "GET", scanPath(sb));
    assert.equal(all.body.results.length, 35);
    assert.equal(all.body.paging.limit, 50);
    // Filters apply to the scan as to the paged search.
    const active = await call(sb, "GET", scanPath(sb, { status: "active", limit: "100" }));
    assert.ok(active.body.results.length > 0 && active.body.results.length < 35);
    assert.deepEqual(sb.invalidRequests(), []);
    for (const bad of [{ limit: "101" }, { limit: "0" }, { offset: "0" }] as Record<string, string>[]) {
      const answer = await call(sb, "GET", scanPath(sb, bad));
      assert.equal(answer.status, 400, JSON.stringify(bad));
      assert.equal(answer.body.error, "bad_request");
    }
    assert.equal((await call(sb, "GET", `/users/${sb.userId}/items/search?search_type=full`)).status, 400);
    assert.equal((await call(sb, "GET", `/users/${sb.userId}/items/search?scroll_id=abc`)).status, 400);
    // Past 1,000 results only a scan reads on.
    const deep = await call(sb, "GET", `/users/${sb.userId}/items/search?offset=1001`);
    assert.equal(deep.status, 400);
    assert.equal((await call(sb, "GET", `/users/${sb.userId}/items/search?offset=1000`)).status, 200);
    assert.equal(sb.invalidRequests().length, 6);
  });
});

Deno.test("scan: an exhausted, expired or made-up scroll_id is MeLi's invalid.scroll.id", async () => {
  const c = clock();
  await withSandbox(async (sb) => {
    const INVALID_SCROLL = {
      message: "Invalid Scroll Id: Error decode reading Scroll ID",
      error: "invalid.scroll.id",
      status: 400,
      cause: [],
    };
    const first = await call(sb, "GET", scanPath(sb, { limit: "10" }));
    const id: string = first.body.scroll_id;
    // Each use keeps it alive for 5 more minutes.
    c.advance(4 * 60_000);
    assert.equal((await call(sb, "GET", scanPath(sb, { scroll_id: id, limit: "10" }))).status, 200);
    c.advance(4 * 60_000);
    assert.equal((await call(sb, "GET", scanPath(sb, { scroll_id: id, limit: "10" }))).status, 200);
    c.advance(5 * 60_000);
    const expired = await call(sb, "GET", scanPath(sb, { scroll_id: id, limit: "10" }));
    assert.equal(expired.status, 400);
    assert.deepEqual(expired.body, INVALID_SCROLL);
    // Expiring is time passing, not a malformed request.
    assert.deepEqual(sb.invalidRequests(), []);
    // The control action expires every open scroll at once.
    const again = (await call(sb, "GET", scanPath(sb))).body.scroll_id;
    sb.expireScrolls();
    assert.deepEqual((await call(sb, "GET", scanPath(sb, { scroll_id: again }))).body, INVALID_SCROLL);
    const viaHttp = (await call(sb, "GET", scanPath(sb))).body.scroll_id;
    await (await fetch(`${sb.url}/__sandbox/expire-scrolls`, { method: "POST" })).body?.cancel();
    assert.equal((await call(sb, "GET", scanPath(sb, { scroll_id: viaHttp }))).status, 400);
    // An exhausted scroll is closed.
    const whole = (await call(sb, "GET", scanPath(sb, { limit: "100" }))).body.scroll_id;
    assert.equal((await call(sb, "GET", scanPath(sb, { scroll_id: whole }))).body.scroll_id, "");
    assert.equal((await call(sb, "GET", scanPath(sb, { scroll_id: whole }))).status, 400);
    assert.deepEqual(sb.invalidRequests(), []);
    // One never issued is a client bug; so is an empty one.
    assert.deepEqual((await call(sb, "GET", scanPath(sb, { scroll_id: "bm9wZQ==" }))).body, INVALID_SCROLL);
    assert.equal((await call(sb, "GET", scanPath(sb, { scroll_id: "" }))).status, 400);
    assert.equal(sb.invalidRequests().length, 2);
    // A token is required, as everywhere.
    assert.equal((await call(sb, "GET", scanPath(sb), { token: null })).status, 401);
  }, { now: c.now });
});

Deno.test("other sellers: their items are readable, never in our search or scan, and not writable", async () => {
  const theirs = buildCatalog({ skus: 3, stores: 1, seed: 9 });
  // The same SKU as one of ours: still not ours.
  theirs.products[0].sku = "REMERA-001";
  await withSandbox(async (sb) => {
    const foreign = sb.itemsOf(555);
    assert.deepEqual(foreign, ["MLA1420000036", "MLA1420000037", "MLA1420000038"]);
    assert.equal(sb.itemsOf(sb.userId).length, 35);
    const scan = await call(sb, "GET", scanPath(sb, { limit: "100" }));
    assert.deepEqual(scan.body.results, sb.itemsOf(sb.userId));
    assert.equal(scan.body.paging.total, 35);
    assert.deepEqual((await search(sb, "REMERA-001")).body.results, [listing(sb, "REMERA-001").itemId]);
    const other = await call(sb, "GET", "/users/555/items/search?search_type=scan");
    assert.equal(other.status, 403);
    assert.deepEqual(other.body, {
      message: "Searching another user items is restricted.",
      error: "forbidden",
      status: 403,
      cause: [],
    });
    const read = await call(sb, "GET", `/items?ids=${foreign[0]},${listing(sb, "REMERA-001").itemId}`);
    assert.deepEqual(read.body.map((r: Json) => [r.code, r.body.seller_id]), [[200, 555], [200, sb.userId]]);
    const put = await call(sb, "PUT", `/items/${foreign[0]}`, { json: { available_quantity: 1 } });
    assert.equal(put.status, 403);
    assert.equal(sb.stats().puts, 0);
    assert.equal(sb.listings.length, 40);
  }, { otherSellers: [{ userId: 555, catalog: parseCatalog(theirs) }] });
  await assert.rejects(() => startMeliSandbox({ otherSellers: [{ userId: 123456789, catalog: CATALOG }] }));
});

Deno.test("multi-get: up to 20 ids, each {code, body}; attributes= picks fields; more is 400", async () => {
  await withSandbox(async (sb) => {
    const ids = sb.itemsOf(sb.userId);
    const jean = listing(sb, "JEAN-RECTO-38");
    const picked = await call(
      sb,
      "GET",
      `/items?ids=${jean.itemId},MLA1&include_attributes=all&attributes=id,variations,shipping`,
    );
    assert.equal(picked.status, 200);
    assert.deepEqual(picked.body.map((r: Json) => r.code), [200, 404]);
    assert.deepEqual(Object.keys(picked.body[0].body).sort(), ["id", "shipping", "variations"]);
    assert.equal(
      picked.body[0].body.variations[0].attributes.find((a: Json) => a.id === "SELLER_SKU").value_name,
      "JEAN-RECTO-38",
    );
    assert.equal((await call(sb, "GET", `/items?ids=${ids.slice(0, 20).join(",")}`)).body.length, 20);
    assert.deepEqual(sb.invalidRequests(), []);
    const tooMany = await call(sb, "GET", `/items?ids=${ids.slice(0, 21).join(",")}`);
    assert.equal(tooMany.status, 400);
    assert.equal(tooMany.body.error, "bad_request");
    assert.equal((await call(sb, "GET", "/items?ids=")).status, 400);
    assert.equal((await call(sb, "GET", `/items?ids=${ids[0]}`, { token: null })).status, 401);
  });
});

Deno.test("Full and under review: from catalog fields or the control route, as MeLi reports them", async () => {
  const catalog = buildCatalog({ skus: 4, stores: 1, seed: 3 });
  catalog.products[0].meli_logistic_type = "fulfillment";
  catalog.products[1].meli_status = "under_review";
  catalog.products[2].meli_item = "PAIR";
  catalog.products[3].meli_item = "PAIR";
  catalog.products[3].meli_status = "paused";
  await withSandbox(async (sb) => {
    const [full, review, pair] = sb.itemsOf(sb.userId).map((id) => sb.item(id) as Json);
    assert.equal(full.shipping.logistic_type, "fulfillment");
    assert.equal(review.status, "under_review");
    assert.equal(pair.status, "paused");
    const put = await call(sb, "PUT", `/items/${full.id}`, { json: { available_quantity: 1 } });
    assert.equal(put.status, 400);
    const post = (id: string, body: unknown) =>
      fetch(`${sb.url}/__sandbox/items/${id}`, { method: "POST", body: JSON.stringify(body) });
    const changed = await post(pair.id, { status: "under_review", sub_status: ["waiting_for_patch"] });
    assert.equal(changed.status, 200);
    assert.deepEqual(
      [(await changed.json()).status, (sb.item(pair.id) as Json).sub_status],
      ["under_review", ["waiting_for_patch"]],
    );
    assert.equal((await post(pair.id, { logistic_type: "fulfillment" })).status, 200);
    assert.equal((sb.item(pair.id) as Json).shipping.logistic_type, "fulfillment");
    const bad = await post(pair.id, { status: "gone" });
    assert.equal(bad.status, 400);
    await bad.body?.cancel();
    const extra = await post(pair.id, { price: 1 });
    assert.equal(extra.status, 400);
    await extra.body?.cancel();
    const missing = await post("MLA1", { status: "active" });
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  }, { catalog: parseCatalog(catalog) });
  const disagree = structuredClone(catalog);
  disagree.products[2].meli_status = "active";
  assert.throws(() => parseCatalog(disagree), /meli_status differs within meli_item PAIR/);
});

Deno.test("user products: items of one user product share stock; a write to one is copied to its siblings", async () => {
  const catalog = defaultCatalog();
  catalog.products.find((p) => p.sku === "REMERA-002")!.meli_items = 3;
  await withSandbox(async (sb) => {
    const family = sb.listingFor(product("REMERA-002").producto_id)!;
    assert.equal(family.itemIds.length, 3);
    for (const id of family.itemIds) {
      assert.equal((await call(sb, "GET", `/items/${id}`)).body.user_product_id, family.userProductId);
    }
    assert.deepEqual((await search(sb, "REMERA-002")).body.results, family.itemIds);
    const put = await call(sb, "PUT", `/items/${family.itemIds[1]}`, { json: { available_quantity: 4 } });
    assert.equal(put.status, 200);
    for (const id of family.itemIds) {
      assert.equal((await call(sb, "GET", `/items/${id}`)).body.available_quantity, 4, id);
    }
    const stock = await call(sb, "GET", `/user-products/${family.userProductId}/stock`);
    assert.equal(stock.status, 200);
    assert.deepEqual(stock.body.locations, [{ type: "selling_address", quantity: 4 }]);
    assert.match(stock.headers.get("x-version") ?? "", /^\d+$/);
    // The variations of an item are user products of their own.
    const jean = await call(sb, "GET", `/items/${listing(sb, "JEAN-RECTO-38").itemId}`);
    assert.equal(jean.body.variations.length, 3);
    assert.equal(new Set(jean.body.variations.map((v: Json) => v.user_product_id)).size, 3);
    assert.deepEqual(sb.stats().putsByUserProduct, { [family.userProductId]: 1 });
    assert.deepEqual(sb.invalidRequests(), []);
  }, { catalog });
});

Deno.test("user products: stock writes need the x-version read (400 missing, 409 stale) and bump it", async () => {
  const warehouses = [
    { store_id: "1001", network_node_id: "MLA1001", tienda_id: CATALOG.stores[0].tienda_id },
    { store_id: "1002", network_node_id: "MLA1002", tienda_id: CATALOG.stores[1].tienda_id },
  ];
  await withSandbox(async (sb) => {
    const up = listing(sb, "REMERA-001").userProductId;
    const path = `/user-products/${up}/stock/type/seller_warehouse`;
    const read = await call(sb, "GET", `/user-products/${up}/stock`);
    assert.deepEqual(read.body.locations.map((l: Json) => [l.type, l.store_id]), [
      ["seller_warehouse", "1001"],
      ["seller_warehouse", "1002"],
    ]);
    const version = read.headers.get("x-version")!;
    const body = { locations: [{ store_id: "1002", network_node_id: "MLA1002", quantity: 7 }] };
    const missing = await call(sb, "PUT", path, { json: body });
    assert.deepEqual([missing.status, missing.body.message], [400, "Missing X-Version header"]);
    // /items stock of a multi-origin seller is ignored; the selling_address API is not its.
    const onItems = await call(sb, "PUT", `/items/${listing(sb, "REMERA-001").itemId}`, {
      json: { available_quantity: 99 },
    });
    assert.equal(onItems.status, 200);
    assert.notEqual(onItems.body.available_quantity, 99);
    const selling = await call(sb, "PUT", `/user-products/${up}/stock/type/selling_address`, {
      json: { quantity: 1 },
      headers: { "x-version": version },
    });
    assert.equal(selling.status, 400);
    for (
      const bad of [
        { locations: [{ store_id: "9999", quantity: 1 }] },
        { locations: [{ store_id: "1001", quantity: -1 }] },
        { locations: [{ quantity: 1 }] },
        { locations: [] },
        { locations: [{ store_id: "1001", quantity: 1, colour: "red" }] },
      ]
    ) {
      const answer = await call(sb, "PUT", path, { json: bad, headers: { "x-version": version } });
      assert.equal(answer.status, 400, JSON.stringify(bad));
      assert.deepEqual(Object.keys(answer.body).sort(), ["cause", "error", "message", "status"]);
    }
    const unknownType = await call(sb, "PUT", `/user-products/${up}/stock/type/warehouse`, {
      json: { quantity: 1 },
      headers: { "x-version": version },
    });
    assert.equal(unknownType.status, 400);
    const ok = await call(sb, "PUT", path, { json: body, headers: { "x-version": version } });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.locations.find((l: Json) => l.store_id === "1002").quantity, 7);
    // As MeLi: a write changes only the locations it lists; 1001 keeps what it had.
    assert.equal(
      ok.body.locations.find((l: Json) => l.store_id === "1001").quantity,
      read.body.locations.find((l: Json) => l.store_id === "1001").quantity,
    );
    const stale = await call(sb, "PUT", path, { json: body, headers: { "x-version": version } });
    assert.deepEqual([stale.status, stale.body.message], [409, "Version mismatch"]);
    const again = await call(sb, "GET", `/user-products/${up}/stock`);
    assert.equal(Number(again.headers.get("x-version")), Number(version) + 1);
    const item = await call(sb, "GET", `/items/${listing(sb, "REMERA-001").itemId}`);
    const total = again.body.locations.reduce((s: number, l: Json) => s + l.quantity, 0);
    assert.equal(item.body.available_quantity, total, "the item shows the locations' total");
    // The race hook: a MeLi-side change right after the next read makes that read's version stale.
    sb.raceStockWrite(up, { type: "seller_warehouse", store_id: "1001" }, 0);
    const raced = await call(sb, "GET", `/user-products/${up}/stock`);
    const lost = await call(sb, "PUT", path, {
      json: body,
      headers: { "x-version": raced.headers.get("x-version")! },
    });
    assert.equal(lost.status, 409);
    assert.equal(sb.userProductStock(up)!.locations.find((l) => l.store_id === "1001")!.quantity, 0);
    assert.equal(sb.stats().putsByUserProduct[up], 1);
  }, { userTags: ["normal", "warehouse_management"], warehouses });
});

Deno.test("user products: Full's meli_facility stock is never writable", async () => {
  const catalog = defaultCatalog();
  catalog.products.find((p) => p.sku === "RINONERA")!.meli_logistic_type = "fulfillment";
  await withSandbox(async (sb) => {
    const full = listing(sb, "RINONERA");
    const read = await call(sb, "GET", `/user-products/${full.userProductId}/stock`);
    assert.deepEqual(read.body.locations.map((l: Json) => l.type), ["meli_facility"]);
    const version = read.headers.get("x-version")!;
    for (const type of ["meli_facility", "selling_address"]) {
      const put = await call(sb, "PUT", `/user-products/${full.userProductId}/stock/type/${type}`, {
        json: { quantity: 3 },
        headers: { "x-version": version },
      });
      assert.equal(put.status, 400, type);
    }
    assert.equal(
      (await call(sb, "PUT", `/items/${full.itemId}`, { json: { available_quantity: 3 } })).status,
      400,
    );
    assert.equal(sb.stats().puts, 0);
  }, { catalog });
});
