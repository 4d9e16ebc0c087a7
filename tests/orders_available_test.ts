/**
 * Available stock (issue #14) end to end: MercadoLibre's mirror mode writes the POS stock MINUS the
 * marketplace orders the POS has not recorded, so a Shopify order lowers MercadoLibre at once, a
 * MercadoLibre order is never written back up by the next POS sale's mirror write, and once the POS records
 * an order (its echo) the POS's own number carries it. Real RabbitMQ, Postgres and Redis; the MeLi sandbox
 * configured as if it were the real API; the POS's stock keys in Redis.
 */
import assert from "node:assert/strict";
import { startService } from "../src/main.ts";
import type { OrderEvent } from "../src/model/marketplace_order.ts";
import { defaultCatalog } from "../src/sandbox/catalog.ts";
import { startMeliSandbox } from "../src/sandbox/mercadolibre/sandbox.ts";
import { meliAsRealApi } from "../scripts/support/service_env.ts";
import { harnessFor, integration, sale, testConfig, waitFor } from "./helpers.ts";
import { Pos } from "./pos.ts";

const catalog = defaultCatalog();
const STORE = catalog.stores[0].tienda_id;
const SKU = "REMERA-001";
const producto = catalog.products.find((p) => p.sku === SKU)!.producto_id;

function order(origin: "shopify" | "mercadolibre", orderId: string, quantity: number): OrderEvent {
  return {
    kind: "created",
    origin,
    orderId,
    tiendaId: STORE,
    lines: [{ lineId: `${orderId}-1`, sku: SKU, quantity }],
    occurredAt: new Date().toISOString(),
    via: "webhook",
  };
}

integration(
  "MeLi mirror writes available stock: orders the POS has not recorded stay off, none is undone",
  async () => {
    const sandbox = await startMeliSandbox({ catalog, tiendaId: STORE, ratePerSecond: 100 });
    const pos = await Pos.open();
    const config = testConfig({
      ...meliAsRealApi(sandbox, STORE),
      MELI_RATE_PER_SEC: "200",
      POS_STOCK_KEY: pos.keyTemplate,
      DISPATCH_POLL_INTERVAL: "50ms",
    });
    const service = startService(config);
    await service.started;
    const h = await harnessFor(service, config);
    const settled = (n: number) =>
      waitFor(
        async () =>
          (await h.sql`select count(*)::int as n from stock_change where status = 'applied' and delta <> 0`)[
            0
          ].n === n,
        `${n} MeLi changes applied`,
        20_000,
      );
    try {
      // A POS sale first: MeLi mirrors the POS (stock enough that nothing is clamped at 0).
      await pos.set(STORE, SKU, 20);
      await pos.sell(h, STORE, [{ sku: SKU, qty: 1 }]);
      await settled(1);
      const posStock = await pos.get(STORE, SKU);
      assert.equal(sandbox.quantityOf(producto), posStock);

      // A Shopify order: MercadoLibre loses its units at once, though the POS has not heard of it.
      assert.deepEqual(await service.orders.apply(order("shopify", "S1", 2)), {
        outcome: "applied",
        changes: 1,
      });
      await settled(2);
      assert.equal(sandbox.quantityOf(producto), posStock - 2, "POS − the Shopify order");

      // A MercadoLibre order (MeLi lowered itself; here the sandbox is lowered as MeLi does).
      sandbox.setQuantity(producto, sandbox.quantityOf(producto)! - 1);
      await service.orders.apply(order("mercadolibre", "M1", 1));
      // The next POS sale of that SKU mirrors the POS value: the MeLi order must stay sold.
      await pos.sell(h, STORE, [{ sku: SKU, qty: 1 }]);
      await settled(3);
      assert.equal(await pos.get(STORE, SKU), posStock - 1);
      assert.equal(sandbox.quantityOf(producto), posStock - 1 - 2 - 1, "POS − both orders: nothing undone");

      // The POS records the Shopify order (lowers its stock, re-publishes it with origen): no stock change,
      // and from now on the POS's own number carries those units.
      await pos.set(STORE, SKU, (await pos.get(STORE, SKU)) - 2);
      await h.publish(
        sale({
          tienda_id: STORE,
          origen: "shopify",
          origen_order_id: "S1",
          items: [{ producto_id: producto, producto_sku: SKU, cantidad: 2 }],
        }),
      );
      await waitFor(
        async () => (await h.sql`select count(*)::int as n from marketplace_order_echo`)[0].n === 1,
        "the echo recorded",
      );
      await pos.sell(h, STORE, [{ sku: SKU, qty: 1 }]);
      await settled(4);
      const total = (await h.sql`select count(*)::int as n from stock_change where delta <> 0`)[0].n;
      assert.equal(total, 4, "the echo created no change");
      assert.equal(
        sandbox.quantityOf(producto),
        (await pos.get(STORE, SKU)) - 1,
        "POS (now counting the Shopify order) − the MeLi order it has not recorded",
      );
      assert.deepEqual(sandbox.invalidRequests(), []);
    } finally {
      await h.close();
      await sandbox.close();
      await pos.close();
    }
  },
);
