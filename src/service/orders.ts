/**
 * Marketplace orders wired to the service (issue #14): the ledger's order book with its metrics and the
 * dispatchers' / outbox's wake-ups, and where an order's SKU finds the POS's producto_id (the POS stock key
 * wants it): the ledger's own sales at that store, the POS catalog, the sandbox catalog in sandbox mode.
 */
import type { Sql } from "postgres";
import type { Config } from "../config.ts";
import { OrderLedger } from "../ledger/orders.ts";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { ChannelName } from "../model/channel_name.ts";
import type { PosStockReader } from "../pos/stock.ts";
import type { Catalog } from "../sandbox/catalog.ts";
import { sandboxPos } from "./pos_source.ts";

const log = logger("orders");

/** What the order book is built from. */
export interface OrderWiring {
  config: Config;
  sql: Sql;
  metrics: ServiceMetrics;
  /** Per channel, the only stores it shows (asked once the plugs can say). */
  onlyStores: () => Promise<Partial<Record<ChannelName, string[]>>>;
  /** The POS reader (its product query). */
  pos: () => PosStockReader;
  sandboxCatalog: () => Promise<Catalog>;
  /** New changes and a POS message were committed. */
  changed: () => void;
}

/** The ledger's order book, observed by the metrics. */
export function orderBook(wiring: OrderWiring): OrderLedger {
  const { metrics, sql, config } = wiring;
  return new OrderLedger(sql, {
    channels: config.CHANNELS,
    onlyStores: wiring.onlyStores,
    productoId: (tiendaId, sku) => productoIdOf(wiring, tiendaId, sku),
    observer: {
      applied(event, effect, lag) {
        metrics.ordersApplied.inc({
          origin: event.origin,
          kind: event.kind,
          via: event.via,
          outcome: effect.outcome,
        });
        if (effect.outcome === "applied" && lag !== undefined) {
          metrics.orderLagSeconds.observe({ origin: event.origin, via: event.via }, lag);
        }
        const line = "{origin} order {order_id} {kind} via {via}: {outcome} ({changes} stock changes)";
        const fields = {
          origin: event.origin,
          order_id: event.orderId,
          kind: event.kind === "restock" ? `restock ${event.restockId}` : "created",
          via: event.via,
          outcome: effect.outcome,
          changes: effect.changes,
        };
        if (effect.outcome === "applied") log.info(line, { mark: "received", ...fields });
        // A restock before its order: it waits for the order (one that never comes shows in the pending table).
        else if (effect.outcome === "deferred") log.info(line, fields);
        else log.debug(line, fields);
      },
      changed: wiring.changed,
      received: (channel, duplicate) =>
        metrics.orderDeliveries.inc({ channel, outcome: duplicate ? "duplicate" : "stored" }),
      settled(channel, quarantine) {
        metrics.orderDeliveries.inc({ channel, outcome: quarantine ? "quarantined" : "done" });
        if (quarantine) {
          log.warning("{channel} delivery quarantined ({reason}): {error}", {
            channel,
            reason: quarantine.reason,
            error: quarantine.error,
          });
        }
      },
    },
  });
}

/** The POS's producto_id of a SKU at a store, or null (the stock query then finds the SKU by itself). */
async function productoIdOf(wiring: OrderWiring, tiendaId: string, sku: string): Promise<string | null> {
  const [known] = await wiring.sql<{ producto_id: string }[]>`
    select producto_id from stock_change
     where sku = ${sku} and tienda_id = ${tiendaId} and producto_id is not null
     order by id desc limit 1`;
  if (known) return known.producto_id;
  if (sandboxPos(wiring.config)) {
    const catalog = await wiring.sandboxCatalog();
    return catalog.products.find((p) => p.sku === sku)?.producto_id ?? null;
  }
  return await wiring.pos().productoId(tiendaId, sku);
}
