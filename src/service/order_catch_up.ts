/**
 * The catch-up poll of marketplace orders (issue #14): on start and every ORDERS_POLL_INTERVAL, each plugged
 * channel's {@link OrderSource} is asked for the orders updated since the stored watermark, their events are
 * applied (duplicates of what webhooks delivered are no-ops inside `apply`), and the watermark moves to the
 * last applied page's newest update. Nothing is lost while the service is down or a notification never came.
 */
import type { OrderLedger } from "../ledger/orders.ts";
import { InvalidOrderEventError } from "../ledger/orders.ts";
import { logger } from "../log.ts";
import type { ServiceMetrics } from "../metrics.ts";
import type { ChannelName } from "../model/channel_name.ts";
import type { OrderSource } from "../sync/channel.ts";

const log = logger("orders");

/**
 * Each poll reads this far behind its watermark: a marketplace's search shows an order a little after its
 * update time (MercadoLibre's search is eventually consistent), and replicas' clocks differ. What is read
 * twice is a duplicate, never a second effect.
 */
export const CATCH_UP_OVERLAP_MS = 60_000;

/** A channel the catch-up polls. */
export interface CatchUpChannel {
  name: ChannelName;
  orders: OrderSource;
}

/** Options of {@link OrderCatchUp}. */
export interface OrderCatchUpOptions {
  ledger: Pick<OrderLedger, "apply" | "watermark" | "advance">;
  channels: () => CatchUpChannel[];
  intervalMs: number;
  metrics: ServiceMetrics;
}

/** What one channel's poll did. */
export interface CatchUpResult {
  channel: ChannelName;
  orders: number;
  applied: number;
  /** The watermark after the poll (ISO 8601). */
  watermark: string;
  error?: string;
}

/** The polling loop. */
export class OrderCatchUp {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #round: Promise<unknown> | undefined;
  readonly #abort = new AbortController();

  constructor(private readonly options: OrderCatchUpOptions) {}

  /** Polls every channel now, then every interval. */
  start(): void {
    if (this.#round) return;
    const tick = () => {
      this.#round = this.runOnce().finally(() => {
        if (!this.#abort.signal.aborted) this.#timer = setTimeout(tick, this.options.intervalMs);
      });
    };
    tick();
  }

  /** One poll of every channel, one after the other (tests call it directly). */
  async runOnce(): Promise<CatchUpResult[]> {
    const results: CatchUpResult[] = [];
    for (const channel of this.options.channels()) {
      if (this.#abort.signal.aborted) break;
      results.push(await this.poll(channel));
    }
    return results;
  }

  /** One channel's poll from its watermark; an error leaves the watermark where the last good page put it. */
  async poll(channel: CatchUpChannel): Promise<CatchUpResult> {
    const { ledger, metrics } = this.options;
    const result: CatchUpResult = { channel: channel.name, orders: 0, applied: 0, watermark: "" };
    try {
      const stored = await ledger.watermark(channel.name);
      if (stored === undefined) {
        // First start: orders before it were never this service's to apply (the stock was set without them).
        result.watermark = new Date().toISOString();
        await ledger.advance(channel.name, result.watermark);
        log.info("{channel} orders: catch-up starts from now ({since})", {
          channel: channel.name,
          since: result.watermark,
        });
        metrics.orderCatchUps.inc({ channel: channel.name, outcome: "ok" });
        return result;
      }
      result.watermark = stored;
      const since = new Date(Date.parse(stored) - CATCH_UP_OVERLAP_MS).toISOString();
      for await (const page of channel.orders.updatedSince(since, this.#abort.signal)) {
        let newest = result.watermark;
        for (const order of page) {
          result.orders++;
          for (const event of order.events) {
            try {
              if ((await ledger.apply(event)).outcome === "applied") result.applied++;
            } catch (error) {
              if (!(error instanceof InvalidOrderEventError)) throw error;
              // A parser bug must not hold the watermark back forever: logged, and the poll goes on.
              log.error("{channel} order event not applied: {error}", {
                mark: "error",
                channel: channel.name,
                error: error.message,
              });
            }
          }
          if (Date.parse(order.updatedAt) > Date.parse(newest)) {
            newest = new Date(order.updatedAt).toISOString();
          }
        }
        // The page is in the ledger: the next poll (or replica) starts after it.
        if (newest !== result.watermark) {
          await ledger.advance(channel.name, newest);
          result.watermark = newest;
        }
      }
      metrics.orderCatchUps.inc({ channel: channel.name, outcome: "ok" });
      if (result.applied > 0) {
        log.info("{channel} orders: catch-up applied {applied} event(s) of {orders} order(s)", {
          channel: channel.name,
          applied: result.applied,
          orders: result.orders,
        });
      }
    } catch (error) {
      result.error = (error as Error).message;
      metrics.orderCatchUps.inc({ channel: channel.name, outcome: "error" });
      if (!this.#abort.signal.aborted) {
        log.warning("{channel} orders: catch-up stopped at {since} ({error}); next poll goes on from there", {
          channel: channel.name,
          since: result.watermark,
          error: result.error,
        });
      }
    }
    return result;
  }

  /** Stops polling; a poll in flight is aborted (its applied pages stay applied). */
  async close(): Promise<void> {
    this.#abort.abort();
    clearTimeout(this.#timer);
    await this.#round?.catch(() => {});
    clearTimeout(this.#timer);
  }
}
