/**
 * The naive baseline the benchmark compares against: the original design's
 * shape, kept here as a yardstick and NOT a mode of the service. One consumer,
 * one delivery at a time, one Shopify call per sale item (plus a SKU lookup the
 * first time a SKU is seen), no coalescing, no shared budget: when Shopify says
 * THROTTLED, 429 or 5xx, it sleeps inside the handler and tries again.
 */
import { Buffer } from "node:buffer";
import { type AsyncMessage, type Connection, ConsumerStatus } from "rabbitmq-client";
import { ADJUST_AVAILABLE, ITEMS_BY_SKU } from "../src/channels/shopify/documents.ts";
import { skuSearchQuery } from "../src/channels/shopify/search.ts";

/** Counters the benchmark reads while the baseline runs. */
export interface NaiveStats {
  items: number;
  calls: number;
  throttled: number;
  sleptMs: number;
  /** Wall-clock time (performance.now()) of each applied item. */
  appliedAt: number[];
}

/** Where the baseline sends its calls. */
export interface NaiveTarget {
  graphqlUrl: string;
  token: string;
  locationOf(tiendaId: string): string | undefined;
}

/**
 * Starts the naive consumer on `queue`; stop it with the returned function.
 * Concurrency 1 and prefetch 1, as a simple worker would be written.
 */
export function startNaiveConsumer(
  rabbit: Connection,
  queue: string,
  target: NaiveTarget,
): { stats: NaiveStats; stop(): Promise<void> } {
  const stats: NaiveStats = { items: 0, calls: 0, throttled: 0, sleptMs: 0, appliedAt: [] };
  const items = new Map<string, string>();
  let stopping = false;

  async function call(query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
    for (;;) {
      stats.calls++;
      const response = await fetch(target.graphqlUrl, {
        method: "POST",
        headers: { "content-type": "application/json", "x-shopify-access-token": target.token },
        body: JSON.stringify({ query, variables }),
      });
      const body = response.status === 200 ? await response.json() : (await response.body?.cancel(), null);
      const throttled = body?.errors?.some((e: { extensions?: { code?: string } }) =>
        e.extensions?.code === "THROTTLED"
      );
      if (response.status === 200 && !throttled && !body?.errors) return body.data;
      if (throttled || response.status === 429) stats.throttled++;
      // The original design's retry: sleep in the handler while holding the delivery.
      const wait = Number(response.headers.get("retry-after")) * 1000 || 1000;
      stats.sleptMs += wait;
      await new Promise((r) => setTimeout(r, wait));
      if (stopping) throw new Error("stopping");
    }
  }

  async function handle(msg: AsyncMessage): Promise<ConsumerStatus> {
    const sale = JSON.parse(Buffer.from(msg.body as Uint8Array).toString());
    for (const item of sale.items as { producto_sku: string; cantidad: number }[]) {
      let itemId = items.get(item.producto_sku);
      if (!itemId) {
        const data = await call(ITEMS_BY_SKU, { query: skuSearchQuery(item.producto_sku) }) as {
          inventoryItems: { nodes: { id: string; sku: string }[] };
        };
        itemId = data.inventoryItems.nodes.find((n) => n.sku === item.producto_sku)?.id;
        if (!itemId) continue;
        items.set(item.producto_sku, itemId);
      }
      await call(ADJUST_AVAILABLE, {
        key: crypto.randomUUID(),
        input: {
          reason: "correction",
          name: "available",
          referenceDocumentUri: `gid://naive/Sale/${sale.event_id}`,
          changes: [{
            inventoryItemId: itemId,
            locationId: target.locationOf(sale.tienda_id),
            delta: -item.cantidad,
            changeFromQuantity: null,
          }],
        },
      });
      stats.items++;
      stats.appliedAt.push(performance.now());
    }
    return ConsumerStatus.ACK;
  }

  const consumer = rabbit.createConsumer({ queue, qos: { prefetchCount: 1 }, concurrency: 1 }, handle);
  consumer.on("error", () => {});
  return {
    stats,
    async stop() {
      stopping = true;
      await consumer.close();
    },
  };
}
