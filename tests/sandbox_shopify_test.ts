/**
 * The Shopify sandbox over HTTP with real GraphQL documents: it must behave like the
 * Admin API (2026-10), not accept whatever is sent. Also checks that the committed
 * schema subset is exactly Shopify's published schema for everything it contains.
 */
import assert from "node:assert/strict";
import { buildClientSchema, type IntrospectionQuery } from "graphql";
import {
  compareWithPublished,
  extractSubset,
  type IntrospectionSchemaJson,
  loadPublishedSchema,
  SUBSET_PATH,
} from "../scripts/extract_shopify_schema.ts";
import { buildCatalog, defaultCatalog } from "../src/sandbox/catalog.ts";
import { parseSearchQuery, quoteSearchValue } from "../src/sandbox/shopify/search_query.ts";
import {
  type ShopifySandbox,
  type ShopifySandboxOptions,
  startShopifySandbox,
} from "../src/sandbox/shopify/sandbox.ts";
import { INVENTORY_REASONS } from "../src/sandbox/shopify/inventory.ts";

// The documents the Shopify adapter sends (docs/DESIGN.md §6).
const FIND_VARIANT = `
  query FindVariantBySku($query: String!) {
    productVariants(first: 2, query: $query) {
      nodes { id sku inventoryItem { id } }
    }
  }`;

const ADJUST = `
  mutation AdjustAvailable($input: InventoryAdjustQuantitiesInput!, $key: String!) {
    inventoryAdjustQuantities(input: $input) @idempotent(key: $key) {
      inventoryAdjustmentGroup {
        id reason referenceDocumentUri
        changes { name delta quantityAfterChange item { id sku } location { id } }
      }
      userErrors { field message code }
    }
  }`;

const SET = `
  mutation SetAvailable($input: InventorySetQuantitiesInput!, $key: String!) {
    inventorySetQuantities(input: $input) @idempotent(key: $key) {
      inventoryAdjustmentGroup { id changes(quantityNames: ["available"]) { name delta quantityAfterChange } }
      userErrors { field message code }
    }
  }`;

const LEVEL = `
  query Level($item: ID!, $location: ID!) {
    inventoryItem(id: $item) {
      id sku
      inventoryLevel(locationId: $location) { quantities(names: ["available"]) { name quantity } }
    }
  }`;

const LOCATIONS = `query { locations(first: 5) { nodes { id name } } }`;

// deno-lint-ignore no-explicit-any
type Json = any;

interface Answer {
  status: number;
  body: Json;
}

async function post(
  sb: ShopifySandbox,
  query: string,
  variables?: unknown,
  token = sb.token,
): Promise<Answer> {
  const res = await fetch(sb.graphqlUrl, {
    method: "POST",
    headers: { "content-type": "application/json", "x-shopify-access-token": token },
    body: JSON.stringify({ query, variables }),
  });
  const text = await res.text();
  let body: Json = text;
  try {
    body = JSON.parse(text);
  } catch { /* a 502 is HTML */ }
  return { status: res.status, body };
}

async function withSandbox(
  fn: (sb: ShopifySandbox) => Promise<void>,
  options: ShopifySandboxOptions = {},
): Promise<void> {
  const sb = await startShopifySandbox(options);
  try {
    await fn(sb);
  } finally {
    await sb.close();
  }
}

function variantOf(sb: ShopifySandbox, sku: string) {
  const v = sb.variants.find((x) => x.sku === sku);
  assert.ok(v, `catalog has ${sku}`);
  return v;
}

function adjustInput(changes: Json[], reason = "correction") {
  return { reason, name: "available", referenceDocumentUri: "gid://marketplace-sync/Batch/b-1", changes };
}

Deno.test("schema subset: every type, field and directive is exactly as Shopify published it", async () => {
  const published = await loadPublishedSchema();
  const committed = JSON.parse(await Deno.readTextFile(SUBSET_PATH)).__schema as IntrospectionSchemaJson;
  assert.deepEqual(compareWithPublished(committed, published), []);
  // And it is what the extractor makes today (no hand edits, no stale subset).
  assert.deepEqual(committed, JSON.parse(JSON.stringify(extractSubset(published))));
  const idempotent = committed.directives.find((d) => d.name === "idempotent");
  assert.deepEqual(idempotent?.locations, ["FIELD"]);
  assert.equal(idempotent?.args[0].name, "key");
  assert.equal(idempotent?.args[0].type.kind, "NON_NULL");
  // The subset is a complete schema on its own.
  buildClientSchema({ __schema: committed } as unknown as IntrospectionQuery);
});

Deno.test("schema comparison notices a changed field", async () => {
  const published = await loadPublishedSchema();
  const subset = structuredClone(extractSubset(published));
  const variant = subset.types.find((t) => t.name === "ProductVariant")!;
  variant.fields.find((f: Json) => f.name === "sku").type = { kind: "NON_NULL", name: null, ofType: null };
  assert.deepEqual(compareWithPublished(subset, published), [
    { where: "ProductVariant.sku", problem: "field differs" },
  ]);
});

Deno.test("access token and API version are checked like Shopify", async () => {
  await withSandbox(async (sb) => {
    const wrong = await post(sb, LOCATIONS, undefined, "shpat_wrong");
    assert.equal(wrong.status, 401);
    assert.deepEqual(wrong.body, {
      errors: "[API] Invalid API key or access token (unrecognized login or wrong password)",
    });
    const none = await fetch(sb.graphqlUrl, { method: "POST", body: JSON.stringify({ query: LOCATIONS }) });
    assert.equal(none.status, 401);
    await none.body?.cancel();
    const version = await fetch(`${sb.url}/admin/api/2019-13/graphql.json`, {
      method: "POST",
      headers: { "x-shopify-access-token": sb.token, "content-type": "application/json" },
      body: JSON.stringify({ query: LOCATIONS }),
    });
    assert.equal(version.status, 404);
    assert.deepEqual(await version.json(), { errors: "Not Found" });
    const ok = await post(sb, LOCATIONS);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.data.locations.nodes.length, 5);
    assert.equal(sb.stats().unauthorized, 2);
  });
});

Deno.test("a field outside the schema is a validation error, HTTP 200, nothing executed", async () => {
  await withSandbox(async (sb) => {
    const res = await post(sb, `query { productVariants(first: 1) { nodes { id price } } }`);
    assert.equal(res.status, 200);
    assert.equal(res.body.data, undefined);
    assert.equal(res.body.errors[0].message, "Field 'price' doesn't exist on type 'ProductVariant'");
    assert.equal(res.body.errors[0].extensions.code, "undefinedField");
    const arg = await post(sb, `query { productVariants(first: 1, sku: "x") { nodes { id } } }`);
    assert.equal(arg.body.errors[0].extensions.code, "argumentNotAccepted");
    assert.ok(res.body.extensions.cost, "cost extension on every GraphQL answer");
    assert.equal(sb.stats().executed, 0);
  });
});

Deno.test("productVariants: sku search is exact, escaped values match, ambiguity is visible", async () => {
  await withSandbox(async (sb) => {
    const find = async (query: string) =>
      (await post(sb, FIND_VARIANT, { query })).body.data.productVariants.nodes;
    const tricky = 'TAZA "BLEND": (XL) \\ NEGRA';
    const hit = await find(`sku:${quoteSearchValue(tricky)}`);
    assert.equal(hit.length, 1);
    assert.equal(hit[0].sku, tricky);
    assert.equal(hit[0].inventoryItem.id, variantOf(sb, tricky).inventoryItemId);
    // A prefix of another SKU is not a match.
    assert.deepEqual((await find(`sku:"REMERA-001"`)).map((n: Json) => n.sku), ["REMERA-001"]);
    // Two variants share MATE-IMP-01: the adapter must see both to report sku_ambiguous.
    assert.equal((await find(`sku:"MATE-IMP-01"`)).length, 2);
    // Unquoted form, with a single quote inside.
    assert.deepEqual((await find(`sku:GORRA-O'NEILL`)).map((n: Json) => n.sku), ["GORRA-O'NEILL"]);
    // Shopify search ignores case: the adapter has to keep only the exact SKU.
    assert.deepEqual((await find(`sku:"BUZO-AZUL-M"`)).map((n: Json) => n.sku).sort(), [
      "BUZO-AZUL-M",
      "buzo-azul-m",
    ]);
    assert.deepEqual(await find(`sku:"NO-EXISTE"`), []);
    // An unescaped quote breaks the value; the sandbox says so loudly instead of guessing.
    const unescaped = await post(sb, FIND_VARIANT, { query: `sku:"${tricky}"` });
    assert.equal(unescaped.body.errors[0].extensions.code, "SANDBOX_UNSUPPORTED");
    // Unknown search fields are ignored with Shopify's warning.
    const warned = await post(sb, FIND_VARIANT, { query: `sku:"REMERA-001" colour:red` });
    assert.equal(warned.body.extensions.search[0].warnings[0].field, "colour");
  });
});

Deno.test("search syntax parser: escapes, quotes, OR, negation, prefix", () => {
  assert.deepEqual(parseSearchQuery(`sku:"A \\"B\\" \\\\ C"`), [[
    { field: "sku", value: 'A "B" \\ C', prefix: false, negated: false },
  ]]);
  assert.deepEqual(parseSearchQuery(`sku:A\\:B\\(1\\) OR -title:x*`), [
    [{ field: "sku", value: "A:B(1)", prefix: false, negated: false }],
    [{ field: "title", value: "x", prefix: true, negated: true }],
  ]);
  assert.throws(() => parseSearchQuery(`sku:"open`));
});

Deno.test("inventoryAdjustQuantities without @idempotent is refused (required since 2026-04)", async () => {
  await withSandbox(async (sb) => {
    const v = variantOf(sb, "REMERA-001");
    const loc = sb.locations[0].id;
    const before = sb.available(v.inventoryItemId, loc);
    const doc = ADJUST.replace(" @idempotent(key: $key)", "").replace(", $key: String!", "");
    const res = await post(sb, doc, {
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -1,
        changeFromQuantity: null,
      }]),
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.data, undefined);
    assert.equal(res.body.errors[0].extensions.code, "BAD_REQUEST");
    assert.match(res.body.errors[0].message, /@idempotent directive is required/);
    const blank = await post(sb, ADJUST, {
      key: "  ",
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -1,
        changeFromQuantity: null,
      }]),
    });
    assert.match(blank.body.errors[0].message, /cannot be an empty string or whitespace/);
    assert.equal(sb.available(v.inventoryItemId, loc), before);
  });
});

Deno.test("changeFromQuantity must be present on every change (null allowed)", async () => {
  await withSandbox(async (sb) => {
    const v = variantOf(sb, "REMERA-002");
    const loc = sb.locations[1].id;
    const before = sb.available(v.inventoryItemId, loc)!;
    const res = await post(sb, ADJUST, {
      key: crypto.randomUUID(),
      input: adjustInput([
        { inventoryItemId: v.inventoryItemId, locationId: loc, delta: -1, changeFromQuantity: null },
        { inventoryItemId: v.inventoryItemId, locationId: sb.locations[2].id, delta: -1 },
      ]),
    });
    assert.equal(res.body.errors[0].extensions.code, "INVALID_FIELD_ARGUMENTS");
    assert.equal(
      res.body.errors[0].message,
      "InventoryChangeInput must include the following argument: changeFromQuantity.",
    );
    assert.deepEqual(res.body.errors[0].path, ["inventoryAdjustQuantities", "input", "changes", 1]);
    // Inline literals are held to the same rule.
    const literal = await post(
      sb,
      `mutation { inventoryAdjustQuantities(input: {reason: "correction", name: "available", changes: [
        {inventoryItemId: "${v.inventoryItemId}", locationId: "${loc}", delta: -1}]}) @idempotent(key: "lit-1") {
        userErrors { code } } }`,
    );
    assert.equal(literal.body.errors[0].extensions.code, "INVALID_FIELD_ARGUMENTS");
    assert.equal(sb.available(v.inventoryItemId, loc), before);
    // With the explicit null it goes through.
    const ok = await post(sb, ADJUST, {
      key: crypto.randomUUID(),
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -1,
        changeFromQuantity: null,
      }]),
    });
    assert.deepEqual(ok.body.data.inventoryAdjustQuantities.userErrors, []);
    assert.equal(sb.available(v.inventoryItemId, loc), before - 1);
  });
});

Deno.test("reason must be one of Shopify's documented reasons (there is no 'sale')", async () => {
  await withSandbox(async (sb) => {
    assert.ok(!INVENTORY_REASONS.includes("sale"));
    const v = variantOf(sb, "REMERA-003");
    const loc = sb.locations[0].id;
    const before = sb.available(v.inventoryItemId, loc);
    const change = {
      inventoryItemId: v.inventoryItemId,
      locationId: loc,
      delta: -1,
      changeFromQuantity: null,
    };
    const res = await post(sb, ADJUST, { key: crypto.randomUUID(), input: adjustInput([change], "sale") });
    const payload = res.body.data.inventoryAdjustQuantities;
    assert.equal(payload.inventoryAdjustmentGroup, null);
    assert.deepEqual(payload.userErrors, [
      { field: ["input", "reason"], message: "The specified reason is invalid.", code: "INVALID_REASON" },
    ]);
    assert.equal(sb.available(v.inventoryItemId, loc), before);
    const badName = await post(sb, ADJUST, {
      key: crypto.randomUUID(),
      input: { ...adjustInput([change]), name: "stock" },
    });
    assert.equal(badName.body.data.inventoryAdjustQuantities.userErrors[0].code, "INVALID_QUANTITY_NAME");
  });
});

Deno.test("a replayed idempotency key returns the original result without applying twice", async () => {
  await withSandbox(async (sb) => {
    const v = variantOf(sb, "JEAN-RECTO-40");
    const loc = sb.locations[3].id;
    const before = sb.available(v.inventoryItemId, loc)!;
    const variables = {
      key: "batch-7f3a",
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -2,
        changeFromQuantity: null,
      }]),
    };
    const first = await post(sb, ADJUST, variables);
    const group = first.body.data.inventoryAdjustQuantities.inventoryAdjustmentGroup;
    assert.equal(group.changes[0].name, "available");
    assert.equal(group.changes[0].delta, -2);
    assert.equal(group.changes[0].quantityAfterChange, before - 2);
    assert.deepEqual(group.changes[0].item, { id: v.inventoryItemId, sku: "JEAN-RECTO-40" });
    const again = await post(sb, ADJUST, variables);
    assert.deepEqual(again.body.data, first.body.data);
    assert.equal(sb.available(v.inventoryItemId, loc), before - 2);
    assert.equal(sb.stats().mutationsApplied, 1);
    assert.equal(sb.stats().idempotentReplays, 1);
    // The same key with other variables is refused.
    const other = await post(sb, ADJUST, {
      ...variables,
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -3,
        changeFromQuantity: null,
      }]),
    });
    const payload = other.body.data.inventoryAdjustQuantities;
    assert.equal(payload.inventoryAdjustmentGroup, null);
    assert.equal(payload.userErrors[0].code, "IDEMPOTENCY_KEY_PARAMETER_MISMATCH");
    assert.equal(sb.available(v.inventoryItemId, loc), before - 2);
  });
});

Deno.test("a key still in flight is IDEMPOTENCY_CONCURRENT_REQUEST; a failed one needs a new key", async () => {
  await withSandbox(async (sb) => {
    const v = variantOf(sb, "BOMBILLA-ALPACA");
    const loc = sb.locations[0].id;
    const before = sb.available(v.inventoryItemId, loc)!;
    const variables = {
      key: "slow-1",
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -1,
        changeFromQuantity: null,
      }]),
    };
    sb.setFaults({ latencyMs: 300 });
    const slow = post(sb, ADJUST, variables);
    await new Promise((r) => setTimeout(r, 100));
    const dup = await post(sb, ADJUST, variables);
    assert.equal(
      dup.body.data.inventoryAdjustQuantities.userErrors[0].code,
      "IDEMPOTENCY_CONCURRENT_REQUEST",
    );
    assert.deepEqual((await slow).body.data.inventoryAdjustQuantities.userErrors, []);
    assert.equal(sb.available(v.inventoryItemId, loc), before - 1);

    sb.setFaults({ latencyMs: 0, internalErrorRate: 1 });
    const failing = { ...variables, key: "fails-1" };
    const crashed = await post(sb, ADJUST, failing);
    assert.equal(crashed.body.errors[0].extensions.code, "INTERNAL_SERVER_ERROR");
    sb.setFaults({ internalErrorRate: 0 });
    const retried = await post(sb, ADJUST, failing);
    assert.equal(
      retried.body.data.inventoryAdjustQuantities.userErrors[0].code,
      "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
    );
    assert.equal(sb.available(v.inventoryItemId, loc), before - 1);
  });
});

Deno.test("a user error names the change by index; nothing of the batch is applied", async () => {
  await withSandbox(async (sb) => {
    const items = ["ZAPA-URB-40", "ZAPA-URB-41", "ZAPA-URB-42"].map((s) => variantOf(sb, s).inventoryItemId);
    const loc = sb.locations[4].id;
    const before = items.map((i) => sb.available(i, loc));
    const changes = [
      ...items.map((i) => ({ inventoryItemId: i, locationId: loc, delta: -1, changeFromQuantity: null })),
      {
        inventoryItemId: "gid://shopify/InventoryItem/1",
        locationId: loc,
        delta: -1,
        changeFromQuantity: null,
      },
      {
        inventoryItemId: items[0],
        locationId: "gid://shopify/Location/1",
        delta: -1,
        changeFromQuantity: null,
      },
    ];
    const res = await post(sb, ADJUST, { key: crypto.randomUUID(), input: adjustInput(changes) });
    const payload = res.body.data.inventoryAdjustQuantities;
    assert.equal(payload.inventoryAdjustmentGroup, null);
    assert.deepEqual(payload.userErrors, [
      {
        field: ["input", "changes", "3", "inventoryItemId"],
        message: "The specified inventory item could not be found.",
        code: "INVALID_INVENTORY_ITEM",
      },
      {
        field: ["input", "changes", "4", "locationId"],
        message: "The specified location could not be found.",
        code: "INVALID_LOCATION",
      },
    ]);
    assert.deepEqual(items.map((i) => sb.available(i, loc)), before);
  });
});

Deno.test("more than 250 changes is refused before anything runs", async () => {
  await withSandbox(async (sb) => {
    const v = variantOf(sb, "MEDIAS-PACK3");
    const change = {
      inventoryItemId: v.inventoryItemId,
      locationId: sb.locations[0].id,
      delta: 0,
      changeFromQuantity: null,
    };
    const res = await post(sb, ADJUST, {
      key: crypto.randomUUID(),
      input: adjustInput(Array(251).fill(change)),
    });
    assert.equal(res.body.errors[0].extensions.code, "MAX_INPUT_SIZE_EXCEEDED");
  });
});

Deno.test("inventorySetQuantities is compare-and-set: a stale changeFromQuantity is refused", async () => {
  await withSandbox(async (sb) => {
    const v = variantOf(sb, "TERMO-1L-NEGRO");
    const loc = sb.locations[2].id;
    const read = await post(sb, LEVEL, { item: v.inventoryItemId, location: loc });
    const current: number = read.body.data.inventoryItem.inventoryLevel.quantities[0].quantity;
    assert.equal(current, sb.available(v.inventoryItemId, loc));
    const set = (changeFromQuantity: number | null, quantity: number) =>
      post(sb, SET, {
        key: crypto.randomUUID(),
        input: {
          reason: "correction",
          name: "available",
          referenceDocumentUri: "gid://marketplace-sync/Resync/r-1",
          quantities: [{ inventoryItemId: v.inventoryItemId, locationId: loc, quantity, changeFromQuantity }],
        },
      });
    const stale = (await set(current + 5, 7)).body.data.inventorySetQuantities;
    assert.equal(stale.inventoryAdjustmentGroup, null);
    assert.deepEqual(stale.userErrors, [{
      field: ["input", "quantities", "0", "changeFromQuantity"],
      message: "The changeFromQuantity value does not match persisted value.",
      code: "CHANGE_FROM_QUANTITY_STALE",
    }]);
    assert.equal(sb.available(v.inventoryItemId, loc), current);
    const fresh = (await set(current, current + 3)).body.data.inventorySetQuantities;
    assert.deepEqual(fresh.userErrors, []);
    assert.deepEqual(fresh.inventoryAdjustmentGroup.changes, [
      { name: "available", delta: 3, quantityAfterChange: current + 3 },
    ]);
    assert.equal(sb.available(v.inventoryItemId, loc), current + 3);
  });
});

Deno.test("one stale quantity among 250 refuses the whole inventorySetQuantities call", async () => {
  // Shopify: "If the location's current quantity doesn't match the value you provide, then the
  // mutation fails with a CHANGE_FROM_QUANTITY_STALE error" (InventoryQuantityInput): the call is
  // one adjustment group, applied whole or not at all, and the user error names the quantity.
  await withSandbox(async (sb) => {
    const listings = sb.variants
      .flatMap((v) => sb.locations.map((l) => ({ item: v.inventoryItemId, location: l.id })))
      .slice(0, 250);
    const before = listings.map((l) => sb.available(l.item, l.location)!);
    const quantities = listings.map((l, i) => ({
      inventoryItemId: l.item,
      locationId: l.location,
      quantity: before[i] + 1,
      changeFromQuantity: i === 42 ? before[i] + 9 : before[i],
    }));
    const input = {
      reason: "correction",
      name: "available",
      referenceDocumentUri: "gid://m/Resync/1",
      quantities,
    };
    const refused = await post(sb, SET, { key: crypto.randomUUID(), input });
    assert.deepEqual(refused.body.data.inventorySetQuantities, {
      inventoryAdjustmentGroup: null,
      userErrors: [{
        field: ["input", "quantities", "42", "changeFromQuantity"],
        message: "The changeFromQuantity value does not match persisted value.",
        code: "CHANGE_FROM_QUANTITY_STALE",
      }],
    });
    assert.deepEqual(listings.map((l) => sb.available(l.item, l.location)), before);
    assert.equal(sb.stats().mutationsApplied, 0);
    quantities[42].changeFromQuantity = before[42];
    const applied = await post(sb, SET, { key: crypto.randomUUID(), input });
    assert.deepEqual(applied.body.data.inventorySetQuantities.userErrors, []);
    assert.equal(applied.body.data.inventorySetQuantities.inventoryAdjustmentGroup.changes.length, 250);
    assert.equal(applied.body.extensions.cost.requestedQueryCost, 10);
    assert.deepEqual(listings.map((l) => sb.available(l.item, l.location)), before.map((q) => q + 1));
  }, { catalog: buildCatalog({ skus: 50, stores: 5 }) });
});

Deno.test("cost bucket: THROTTLED when short, restored over time, cost on every answer", async () => {
  // A hand-driven clock, so restoring is exact however slow the machine is.
  const clock = { now: 0 };
  await withSandbox(async (sb) => {
    // locations(first: 5) { nodes { id name } }: 2 + 5 × 1 = 7 points, all returned.
    const a = await post(sb, LOCATIONS);
    assert.deepEqual(a.body.extensions.cost, {
      requestedQueryCost: 7,
      actualQueryCost: 7,
      throttleStatus: { maximumAvailable: 20, currentlyAvailable: 13, restoreRate: 10 },
    });
    await post(sb, LOCATIONS);
    const throttled = await post(sb, LOCATIONS);
    assert.equal(throttled.status, 200);
    assert.equal(throttled.body.data, undefined);
    assert.deepEqual(throttled.body.errors, [{
      message: "Throttled",
      extensions: { code: "THROTTLED", documentation: "https://shopify.dev/api/usage/rate-limits" },
    }]);
    assert.deepEqual(throttled.body.extensions.cost, {
      requestedQueryCost: 7,
      actualQueryCost: null,
      throttleStatus: { maximumAvailable: 20, currentlyAvailable: 6, restoreRate: 10 },
    });
    assert.equal(sb.stats().throttled, 1);
    clock.now += 100; // +1 point
    const restored = await post(sb, LOCATIONS);
    assert.equal(restored.body.data.locations.nodes.length, 5);
    assert.equal(restored.body.extensions.cost.throttleStatus.currentlyAvailable, 0);
    clock.now += 1000;
    // Unused points are given back: 2 + 2 × 2 asked, one variant returned → 4 charged.
    const find = await post(sb, FIND_VARIANT, { query: `sku:"REMERA-001"` });
    assert.equal(find.body.extensions.cost.requestedQueryCost, 6);
    assert.equal(find.body.extensions.cost.actualQueryCost, 4);
    assert.equal(find.body.extensions.cost.throttleStatus.currentlyAvailable, 6);
    // More than the bucket can ever hold is refused outright.
    const huge = await post(sb, `query { productVariants(first: 25) { nodes { id } } }`);
    assert.equal(huge.body.errors[0].extensions.code, "MAX_COST_EXCEEDED");
    assert.equal(sb.stats().costExceeded, 1);
    clock.now += 10_000;
    sb.setFaults({ throttleAll: true });
    assert.equal((await post(sb, LOCATIONS)).body.errors[0].extensions.code, "THROTTLED");
    // Points kept: the actual cost of what ran (7 + 7 + 7 + 4); refused and throttled requests cost none.
    assert.equal(sb.stats().pointsSpent, 25);
  }, { bucket: { maximumAvailable: 20, restoreRate: 10 }, now: () => clock.now });
});

Deno.test("a single query may not cost more than 1,000 points", async () => {
  await withSandbox(async (sb) => {
    const loc = sb.locations[0].id;
    const res = await post(
      sb,
      `query { productVariants(first: 250) { nodes { inventoryItem { inventoryLevel(locationId: "${loc}") {
        location { id } } } } } }`,
    );
    assert.equal(res.body.errors[0].extensions.code, "MAX_COST_EXCEEDED");
    assert.equal(res.body.extensions.cost.requestedQueryCost, 2 + 250 * 4);
  });
});

Deno.test("fault injection: seeded 5xx rate, answered before anything is applied, repeatable", async () => {
  await withSandbox(async (sb) => {
    const statuses = async () => {
      const out: number[] = [];
      for (let i = 0; i < 40; i++) out.push((await post(sb, LOCATIONS)).status);
      return out;
    };
    sb.setFaults({ errorRate: 0.5, seed: 42 });
    const first = await statuses();
    const failures = first.filter((s) => s >= 500);
    assert.ok(failures.length >= 10 && failures.length <= 30, `about half failed: ${failures.length}`);
    assert.ok(failures.every((s) => [500, 502, 503].includes(s)));
    assert.equal(sb.stats().errorsInjected, failures.length);
    sb.setFaults({ seed: 42 });
    assert.deepEqual(await statuses(), first);

    // Through the admin route, with every request failing: a mutation changes nothing.
    const admin = await fetch(`${sb.url}/__sandbox/faults`, {
      method: "POST",
      body: JSON.stringify({ errorRate: 1 }),
    });
    assert.equal((await admin.json()).errorRate, 1);
    const v = variantOf(sb, "RINONERA");
    const loc = sb.locations[0].id;
    const before = sb.available(v.inventoryItemId, loc);
    const res = await post(sb, ADJUST, {
      key: crypto.randomUUID(),
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -1,
        changeFromQuantity: null,
      }]),
    });
    assert.ok(res.status >= 500);
    assert.equal(sb.available(v.inventoryItemId, loc), before);
    const bad = await fetch(`${sb.url}/__sandbox/faults`, {
      method: "POST",
      body: JSON.stringify({ errorRate: 2 }),
    });
    assert.equal(bad.status, 400);
    await bad.body?.cancel();
    const state = await (await fetch(`${sb.url}/__sandbox/state`)).json();
    assert.equal(state.locations.length, 5);
    assert.equal(state.variants.length, 40);
    assert.equal(state.faults.errorRate, 1);
    assert.equal(state.stats.errorsInjected, sb.stats().errorsInjected);
  });
});

Deno.test("a lost response was applied: retrying with the same key replays it", async () => {
  await withSandbox(async (sb) => {
    const v = variantOf(sb, "MOCHILA-URB");
    const loc = sb.locations[1].id;
    const before = sb.available(v.inventoryItemId, loc)!;
    const variables = {
      key: "lost-1",
      input: adjustInput([{
        inventoryItemId: v.inventoryItemId,
        locationId: loc,
        delta: -1,
        changeFromQuantity: null,
      }]),
    };
    sb.setFaults({ lostResponseRate: 1 });
    assert.equal((await post(sb, ADJUST, variables)).status, 502);
    assert.equal(sb.available(v.inventoryItemId, loc), before - 1);
    sb.setFaults({ lostResponseRate: 0 });
    const retry = await post(sb, ADJUST, variables);
    assert.equal(
      retry.body.data.inventoryAdjustQuantities.inventoryAdjustmentGroup.changes[0].quantityAfterChange,
      before - 1,
    );
    assert.equal(sb.available(v.inventoryItemId, loc), before - 1);
  });
});

Deno.test("catalogs: the default has 5 stores and 40 SKUs; generated ones repeat by seed", () => {
  const catalog = defaultCatalog();
  assert.equal(catalog.stores.length, 5);
  assert.equal(catalog.products.length, 40);
  assert.equal(catalog.products.filter((p) => p.sku === "MATE-IMP-01").length, 2);
  const big = buildCatalog({ skus: 1000, stores: 7, seed: 3 });
  assert.equal(big.products.length, 1000);
  assert.equal(Object.keys(big.products[0].stock).length, 7);
  assert.deepEqual(buildCatalog({ skus: 1000, stores: 7, seed: 3 }), big);
});

Deno.test("the sandbox maps catalog stores and products to Shopify ids", async () => {
  const catalog = buildCatalog({ skus: 3, stores: 2, seed: 9 });
  await withSandbox(async (sb) => {
    const p = catalog.products[1];
    const t = catalog.stores[1].tienda_id;
    assert.equal(sb.availableFor(p.producto_id, t), p.stock[t]);
    assert.match(sb.locationIdOf(t)!, /^gid:\/\/shopify\/Location\/\d+$/);
    const res = await post(sb, FIND_VARIANT, { query: `sku:${p.sku}` });
    assert.equal(res.body.data.productVariants.nodes[0].inventoryItem.id, sb.variants[1].inventoryItemId);
  }, { catalog });
});

// ---- Bulk query operations ----

const RUN_BULK = `
  mutation Run($query: String!, $group: Boolean!) {
    bulkOperationRunQuery(query: $query, groupObjects: $group) {
      bulkOperation { id status }
      userErrors { field message code }
    }
  }`;

const BULK_STATUS = `
  query Status($id: ID!) {
    bulkOperation(id: $id) {
      id status errorCode objectCount rootObjectCount fileSize url partialDataUrl completedAt type query
    }
    currentBulkOperation { id }
  }`;

const ITEMS_AND_LEVELS = `{
  inventoryItems {
    edges { node { id sku inventoryLevels { edges { node { location { id } quantities(names: ["available"]) { name quantity } } } } } }
  }
}`;

function runBulk(sb: ShopifySandbox, query: string, group = false) {
  return post(sb, RUN_BULK, { query, group });
}

async function settled(sb: ShopifySandbox, id: string): Promise<Json> {
  for (;;) {
    const op = (await post(sb, BULK_STATUS, { id })).body.data.bulkOperation;
    if (op.status !== "CREATED" && op.status !== "RUNNING") return op;
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("bulk queries are checked like Shopify checks them before anything runs", async () => {
  await withSandbox(async (sb) => {
    const cases: [string, RegExp][] = [
      ["{ inventoryItems(", /^Invalid bulk query: Syntax Error/],
      [
        "{ inventoryItems { edges { node { bogus } } } }",
        /^Invalid bulk query: Field 'bogus' doesn't exist on type/,
      ],
      [
        'mutation { bulkOperationRunQuery(query: "{}") { userErrors { message } } }',
        /Only `query` operations/,
      ],
      ["{ location { id name } }", /^Bulk queries must contain at least one connection\.$/],
      [
        "{ inventoryItems { nodes { id } } }",
        /select their contents using 'edges' > 'node'.*'inventoryItems'/,
      ],
      [
        "{ inventoryItems { edges { node { sku inventoryLevels { edges { node { location { id } } } } } } } }",
        /nested connection must select the 'id' field.*: inventoryLevels\.$/,
      ],
      [
        `{ locations { edges { node { id inventoryLevels { edges { node { id item { id
           inventoryLevels { edges { node { id } } } } } } } } } } }`,
        /nesting depth greater than 2/,
      ],
      [
        `{ inventoryItems { edges { node { id ${
          ["a", "b", "c", "d", "e"].map((a) => `${a}: inventoryLevels { edges { node { id } } }`).join(" ")
        } } } } }`,
        /cannot contain more than 5 connections/,
      ],
      [
        "{ inventoryItems { edges { node { id } } } locations { edges { node { id } } } }",
        /single top-level field/,
      ],
    ];
    for (const [query, message] of cases) {
      const res = await runBulk(sb, query);
      const payload = res.body.data.bulkOperationRunQuery;
      assert.equal(payload.bulkOperation, null, query);
      assert.equal(payload.userErrors.length, 1, `${query}: ${JSON.stringify(payload.userErrors)}`);
      assert.deepEqual(payload.userErrors[0].field, ["query"]);
      assert.equal(payload.userErrors[0].code, "INVALID");
      assert.match(payload.userErrors[0].message, message, query);
    }
    assert.deepEqual(sb.bulkOperations(), [], "nothing started");
  });
});

Deno.test("a bulk query runs in the background and leaves one JSONL line per node, nested ones with __parentId", async () => {
  const catalog = buildCatalog({ skus: 4, stores: 3, seed: 21 });
  await withSandbox(async (sb) => {
    for (const group of [false, true]) {
      const started = (await runBulk(sb, ITEMS_AND_LEVELS, group)).body.data.bulkOperationRunQuery;
      assert.deepEqual(started.userErrors, []);
      assert.equal(started.bulkOperation.status, "CREATED");
      const running = (await post(sb, BULK_STATUS, { id: started.bulkOperation.id })).body.data;
      assert.equal(running.bulkOperation.status, "RUNNING");
      assert.equal(running.bulkOperation.url, null);
      assert.equal(running.currentBulkOperation.id, started.bulkOperation.id, "the most recent one");
      const op = await settled(sb, started.bulkOperation.id);
      assert.equal(op.status, "COMPLETED");
      assert.equal(op.type, "QUERY");
      assert.equal(op.query, ITEMS_AND_LEVELS);
      assert.deepEqual([op.objectCount, op.rootObjectCount], ["16", "4"], "4 items + 12 levels, as strings");
      const text = await (await fetch(op.url)).text();
      assert.equal(String(new TextEncoder().encode(text).byteLength), op.fileSize);
      const lines = text.trimEnd().split("\n").map((l) => JSON.parse(l));
      const v = sb.variants[0];
      const l = sb.locations[1];
      assert.deepEqual(lines.find((x) => x.id === v.inventoryItemId), { id: v.inventoryItemId, sku: v.sku });
      assert.deepEqual(
        lines.find((x) => x.__parentId === v.inventoryItemId && x.location.id === l.id),
        {
          location: { id: l.id },
          quantities: [{ name: "available", quantity: sb.available(v.inventoryItemId, l.id) }],
          __parentId: v.inventoryItemId,
        },
      );
      assert.ok(lines.every((x) => Object.keys(x).at(-1) === "__parentId" || !("__parentId" in x)));
      const order = lines.map((x) => x.__parentId ? "level" : "item").join(",");
      assert.equal(
        order,
        group
          ? Array(4).fill("item,level,level,level").join(",") // each item's levels right after it
          : [...Array(4).fill("item"), ...Array(12).fill("level")].join(","),
      );
    }
    const unknown = await post(sb, BULK_STATUS, { id: "gid://shopify/BulkOperation/1" });
    assert.equal(unknown.body.data.bulkOperation, null);
  }, { catalog, bulkDelayMs: 20 });
});

Deno.test("at most five bulk queries run at once; a FAILED one says why; results expire after seven days", async () => {
  let now = Date.parse("2026-11-02T10:00:00Z");
  await withSandbox(async (sb) => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const payload = (await runBulk(sb, ITEMS_AND_LEVELS)).body.data.bulkOperationRunQuery;
      assert.deepEqual(payload.userErrors, []);
      ids.push(payload.bulkOperation.id);
    }
    const sixth = (await runBulk(sb, ITEMS_AND_LEVELS)).body.data.bulkOperationRunQuery;
    assert.equal(sixth.bulkOperation, null);
    assert.equal(sixth.userErrors[0].code, "OPERATION_IN_PROGRESS");
    assert.equal(sixth.userErrors[0].field, null);
    assert.match(
      sixth.userErrors[0].message,
      /^A bulk query operation for this app and shop is already in progress: /,
    );
    for (const id of ids) assert.ok(sixth.userErrors[0].message.includes(id));
  }, { bulkDelayMs: 60_000, now: () => now });

  await withSandbox(async (sb) => {
    sb.setFaults({ bulkFailure: "TIMEOUT" });
    const failed = await settled(
      sb,
      (await runBulk(sb, ITEMS_AND_LEVELS)).body.data.bulkOperationRunQuery.bulkOperation.id,
    );
    assert.deepEqual(
      [failed.status, failed.errorCode, failed.url, failed.partialDataUrl],
      ["FAILED", "TIMEOUT", null, null],
    );
    sb.setFaults({ bulkFailure: null });
    const done = await settled(
      sb,
      (await runBulk(sb, ITEMS_AND_LEVELS)).body.data.bulkOperationRunQuery.bulkOperation.id,
    );
    assert.equal((await fetch(done.url)).status, 200);
    now += 7 * 24 * 3600_000 + 1_000;
    const expired = await fetch(done.url);
    assert.equal(expired.status, 400);
    assert.match(await expired.text(), /ExpiredToken/);
  }, { bulkDelayMs: 10, now: () => now });
});
