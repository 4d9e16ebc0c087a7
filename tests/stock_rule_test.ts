/** Stock rules: the arithmetic, the most specific rule winning field by field, and STOCK_RULES's errors. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ConfigError, loadConfig } from "../src/config.ts";
import { formatResyncReport } from "../scripts/resync_format.ts";
import {
  applyRule,
  describeRule,
  describeRules,
  hasRules,
  placeQuantity,
  resolveRule,
  type StockRule,
  type StockRules,
} from "../src/model/stock_rule.ts";

const rule = (r: Partial<StockRule>): StockRule => ({ buffer: 0, max: undefined, percent: 100, ...r });

Deno.test("each rule kind: buffer, max, percent, and all three in order", () => {
  assert.equal(applyRule(rule({ buffer: 2 }), 10), 8);
  assert.equal(applyRule(rule({ buffer: 2 }), 1), 0, "never below 0");
  assert.equal(applyRule(rule({ max: 40 }), 55), 40);
  assert.equal(applyRule(rule({ max: 40 }), 12), 12);
  assert.equal(applyRule(rule({ percent: 50 }), 9), 4, "floored");
  assert.equal(applyRule(rule({ percent: 70 }), 10), 7, "exact, no 6.999…");
  assert.equal(applyRule(rule({ percent: 0.5 }), 1000), 5);
  assert.equal(applyRule(rule({ percent: 50, buffer: 2, max: 3 }), 20), 3);
  assert.equal(applyRule(rule({ percent: 50, buffer: 2, max: 30 }), 20), 8);
  assert.equal(applyRule(rule({ buffer: 1 }), -4), 0, "an oversold POS shows 0");
});

Deno.test("property: a ruled quantity is within [0, max], never above the POS, and monotone", () => {
  const arbRule = fc.record({
    buffer: fc.integer({ min: 0, max: 50 }),
    max: fc.option(fc.integer({ min: 0, max: 500 }), { nil: undefined }),
    percent: fc.integer({ min: 0, max: 10_000 }).map((h) => h / 100),
  });
  fc.assert(fc.property(arbRule, fc.integer({ min: -100, max: 100_000 }), (r, q) => {
    const shown = applyRule(r, q);
    assert.ok(Number.isInteger(shown) && shown >= 0);
    if (r.max !== undefined) assert.ok(shown <= r.max);
    assert.ok(shown <= Math.max(0, q));
    assert.ok(applyRule(r, q + 1) >= shown, "one more unit in the POS never shows fewer");
    assert.equal(
      shown,
      Math.min(Math.max(0, Math.floor((q * r.percent) / 100 + 1e-9) - r.buffer), r.max ?? Infinity),
    );
  }));
});

Deno.test("stores sharing a place: each store's rule on its own quantity, summed, clamped at 0", () => {
  assert.equal(
    placeQuantity([{ rule: rule({ buffer: 2 }), quantity: 5 }, { rule: undefined, quantity: 4 }]),
    7,
  );
  assert.equal(placeQuantity([{ rule: undefined, quantity: -3 }, { rule: undefined, quantity: 1 }]), 0);
  assert.equal(
    placeQuantity([{ rule: rule({ max: 1 }), quantity: 5 }, { rule: rule({ max: 1 }), quantity: 5 }]),
    2,
  );
});

Deno.test("the most specific rule wins, field by field: store+prefix > prefix (longest) > store > channel", () => {
  const rules: StockRules = {
    mercadolibre: {
      buffer: 2,
      max: 40,
      skus: { "REM": { max: 10 }, "REMERA-0": { percent: 50 } },
      stores: {
        t1: { buffer: 5, skus: { "REM": { buffer: 1 } } },
        t2: { buffer: 0, max: 1_000_000 },
      },
    },
  };
  const at = (tienda: string, sku: string) => resolveRule(rules, "mercadolibre", tienda, sku);
  assert.deepEqual(at("t9", "JEAN-1"), rule({ buffer: 2, max: 40 }), "channel");
  assert.deepEqual(at("t1", "JEAN-1"), rule({ buffer: 5, max: 40 }), "store over channel");
  assert.deepEqual(
    at("t9", "REMERA-001"),
    rule({ buffer: 2, max: 10, percent: 50 }),
    "both prefixes, longer last",
  );
  assert.deepEqual(at("t9", "REMOLINO"), rule({ buffer: 2, max: 10 }), "only the shorter prefix matches");
  assert.deepEqual(
    at("t1", "REMERA-001"),
    rule({ buffer: 1, max: 10, percent: 50 }),
    "store+prefix over all",
  );
  assert.deepEqual(at("t2", "JEAN-1"), rule({ max: 1_000_000 }), "a store can lift the buffer");
  assert.equal(resolveRule(rules, "shopify", "t1", "REMERA-001"), undefined, "no rule for the channel");
  assert.equal(resolveRule({}, "mercadolibre", "t1", "X"), undefined);
  const exempt: StockRules = { shopify: { buffer: 3, stores: { t1: { buffer: 0 } } } };
  assert.equal(
    resolveRule(exempt, "shopify", "t1", "X"),
    undefined,
    "a rule that changes nothing is no rule",
  );
});

Deno.test("describe: the rule in the order it is applied; several stores' rules when they differ", () => {
  assert.equal(describeRule(rule({ buffer: 2, max: 40 })), "buffer 2, max 40");
  assert.equal(describeRule(rule({ percent: 50, buffer: 1, max: 0 })), "percent 50, buffer 1, max 0");
  assert.equal(describeRule(undefined), "");
  assert.equal(
    describeRules([{ tiendaId: "a", rule: rule({ buffer: 1 }) }, {
      tiendaId: "b",
      rule: rule({ buffer: 1 }),
    }]),
    "buffer 1",
  );
  assert.equal(
    describeRules([{ tiendaId: "a", rule: rule({ buffer: 1 }) }, { tiendaId: "b", rule: undefined }]),
    "a: buffer 1; b: none",
  );
});

Deno.test("STOCK_RULES: valid shapes parse; unset means no rule", () => {
  assert.deepEqual(loadConfig({}).stockRules, {});
  const c = loadConfig({
    STOCK_RULES: JSON.stringify({
      mercadolibre: { buffer: 2, max: 40 },
      shopify: {
        percent: 33.5,
        skus: { "MATE-": { max: 3 } },
        stores: { t1: { buffer: 1, skus: { A: { max: 0 } } } },
      },
    }),
  });
  assert.deepEqual(c.stockRules.mercadolibre, { buffer: 2, max: 40 });
  assert.deepEqual(
    resolveRule(c.stockRules, "shopify", "t1", "MATE-1"),
    rule({ percent: 33.5, buffer: 1, max: 3 }),
  );
});

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems.map((p) => `${p.variable}: ${p.message}`);
  }
  return [];
}

Deno.test("STOCK_RULES: each error names its JSON path and the value found there", () => {
  assert.deepEqual(problems({ STOCK_RULES: '{"mercadolibre": {"percent": 120}}' }), [
    "STOCK_RULES.mercadolibre.percent: must be 0–100, got 120",
  ]);
  assert.deepEqual(
    problems({
      STOCK_RULES: JSON.stringify({
        amazon: { buffer: 1 },
        shopify: { bufer: 1, max: -1, percent: "50", stores: { t1: { skus: { REM: { buffer: 1.5 } } } } },
      }),
    }).sort(),
    [
      "STOCK_RULES.amazon: unknown channel; known: shopify, mercadolibre",
      "STOCK_RULES.shopify.bufer: unknown key; known: buffer, max, percent, skus, stores",
      "STOCK_RULES.shopify.max: must be a whole number from 0 to 1000000000, got -1",
      'STOCK_RULES.shopify.percent: must be a number from 0 to 100, got "50"',
      "STOCK_RULES.shopify.stores.t1.skus.REM.buffer: must be a whole number from 0 to 1000000000, got 1.5",
    ],
  );
  assert.deepEqual(problems({ STOCK_RULES: '{"shopify": {"percent": 33.333}}' }), [
    "STOCK_RULES.shopify.percent: must have at most two decimals, got 33.333",
  ]);
  assert.deepEqual(problems({ STOCK_RULES: '{"shopify": {"skus": {"A": {"stores": {}}}}}' }), [
    "STOCK_RULES.shopify.skus.A.stores: unknown key; known: buffer, max, percent",
  ]);
  assert.match(problems({ STOCK_RULES: "{buffer: 2}" })[0], /^STOCK_RULES: must be JSON like/);
  assert.match(problems({ STOCK_RULES: "[]" })[0], /^STOCK_RULES: must be an object per channel/);
});

Deno.test("STOCK_RULES: a MercadoLibre rule in delta mode needs MELI_TIENDA_ID (both named)", () => {
  const rules = '{"mercadolibre": {"buffer": 1}}';
  const [problem] = problems({ STOCK_RULES: rules, MELI_MODE: "delta" });
  assert.match(problem, /^MELI_TIENDA_ID: .*STOCK_RULES.*MELI_MODE=delta/);
  assert.deepEqual(problems({ STOCK_RULES: rules, MELI_MODE: "delta", MELI_TIENDA_ID: "t1" }), []);
  assert.deepEqual(problems({ STOCK_RULES: '{"shopify": {"buffer": 1}}', MELI_MODE: "delta" }), []);
  assert.deepEqual(problems({ STOCK_RULES: rules, MELI_MODE: "delta", CHANNELS: "shopify" }), []);
  assert.match(problem, /other stores' sales no longer reach it/, "says what setting the store changes");
  // Rules that change nothing are no rules: nothing to require.
  assert.deepEqual(problems({ STOCK_RULES: '{"mercadolibre": {"buffer": 0}}', MELI_MODE: "delta" }), []);
});

Deno.test("hasRules: only a level that changes something makes a channel ruled", () => {
  assert.equal(hasRules({}, "shopify"), false);
  assert.equal(hasRules({ shopify: {} }, "shopify"), false);
  assert.equal(hasRules({ shopify: { buffer: 0, percent: 100, skus: { "A-": {} } } }, "shopify"), false);
  assert.equal(hasRules({ shopify: { skus: { "A-": { max: 0 } } } }, "shopify"), true);
  assert.equal(
    hasRules({ shopify: { stores: { t1: { skus: { "A-": { percent: 99.5 } } } } } }, "shopify"),
    true,
  );
  assert.equal(hasRules({ mercadolibre: { buffer: 1 } }, "shopify"), false);
});

Deno.test("the CLI shows a RULE column when some line has a rule, and none otherwise", () => {
  const line = {
    sku: "A",
    tienda_id: "t1",
    channel: "mercadolibre",
    source_qty: 12,
    in_flight: 0,
    marketplace_qty: 12,
    target: 10,
    difference: -2,
    action: "would_set",
  };
  const ruled = formatResyncReport({
    id: "j",
    state: "done",
    dry_run: true,
    report: [{ ...line, rule: "buffer 2" }],
  });
  assert.match(ruled, /SKU\s+STORE\s+CHANNEL\s+POS\s+RULE\s+TARGET\s+MARKETPLACE/);
  assert.match(ruled, /A\s+t1\s+mercadolibre\s+12\s+buffer 2\s+10\s+12\s+-2\s+would_set/);
  const plain = formatResyncReport({
    id: "j",
    state: "done",
    report: [{ ...line, target: 12, difference: 0, rule: null }],
  });
  assert.doesNotMatch(plain, /RULE/);
});
