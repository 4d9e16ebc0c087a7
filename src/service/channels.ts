/**
 * The channels plugged into this instance, each with its dispatch loop: built from the
 * plugins the root lists, started together, woken when custody stores changes, and
 * stopped in order (finish the batch in flight, then let each plug finish its own work).
 */
import type { ChannelName } from "../model/channel_name.ts";
import type {
  ChannelPlug,
  ChannelPlugin,
  ChannelProbe,
  ChannelStock,
  OrderSource,
  PlugContext,
} from "../sync/channel.ts";
import type { Dispatcher } from "../sync/dispatcher.ts";

/** Plugged channels and their dispatchers. */
export class PluggedChannels {
  readonly #plugs: ChannelPlug[] = [];
  readonly #dispatchers: Dispatcher[] = [];

  /**
   * Plugs every configured channel, in the order of `names`, and gives each a dispatcher.
   * @param dispatcherFor builds the dispatch loop for a plugged channel.
   */
  async plug(
    plugins: Record<ChannelName, ChannelPlugin>,
    names: readonly ChannelName[],
    context: PlugContext,
    dispatcherFor: (plug: ChannelPlug) => Dispatcher,
  ): Promise<void> {
    for (const name of names) {
      const plug = await plugins[name].plug(context);
      this.#plugs.push(plug);
      this.#dispatchers.push(dispatcherFor(plug));
    }
  }

  /** The plug of `name`, when it is plugged here. */
  get<P extends ChannelPlug>(name: ChannelName): P | undefined {
    return this.#plugs.find((p) => p.name === name) as P | undefined;
  }

  /** Resync's side of each channel. */
  get stocks(): ChannelStock[] {
    return this.#plugs.map((p) => p.stock);
  }

  /** The plugged channels that take orders, with their catch-up source (issue #14). */
  get orderSources(): { name: ChannelName; orders: OrderSource }[] {
    return this.#plugs.flatMap((p) => p.orders ? [{ name: p.name, orders: p.orders }] : []);
  }

  /** Status and metrics probes by channel. */
  get probes(): Record<string, ChannelProbe> {
    return Object.fromEntries(this.#plugs.map((p) => [p.name, p.probe]));
  }

  /** Starts every dispatch loop. */
  start(): void {
    for (const d of this.#dispatchers) d.start();
  }

  /** New pending changes: wake the local dispatchers instead of waiting for their poll. */
  wake(): void {
    for (const d of this.#dispatchers) d.wake();
  }

  /** Waits (up to `maxWaitMs`) while `channel`'s dispatcher has work. */
  async idle(channel: string, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    await this.#dispatchers.find((d) => d.channel === channel)?.idle(maxWaitMs, signal);
  }

  /**
   * Lets each dispatcher finish (and record) the batch in flight; after `graceMs` waits for
   * the rate budget are aborted. An unrecorded batch keeps its lease and is re-sent with the
   * same key by whoever claims it next.
   */
  async stop(graceMs: number): Promise<void> {
    const stopped = Promise.all(this.#dispatchers.map((d) => d.stop()));
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((r) => graceTimer = setTimeout(r, graceMs));
    await Promise.race([stopped, grace]);
    clearTimeout(graceTimer);
    for (const d of this.#dispatchers) d.abort();
    await stopped;
  }

  /** Lets each plug finish its own work with the marketplace (token refresh) by `deadline`. */
  async finish(deadline: number): Promise<void> {
    for (const plug of this.#plugs) await plug.finish?.(deadline);
  }

  /** Releases what the plugs hold (built-in sandboxes). */
  async close(): Promise<void> {
    for (const plug of this.#plugs) await plug.close();
  }
}

/**
 * Per channel, the one store whose sales reach it (MercadoLibre mirroring one store),
 * whether or not it is plugged on this instance: custody gives the others no change.
 */
export async function shownStores(
  plugins: Record<ChannelName, ChannelPlugin>,
  names: readonly ChannelName[],
  context: PlugContext,
): Promise<Partial<Record<ChannelName, string[]>>> {
  const shown: Partial<Record<ChannelName, string[]>> = {};
  for (const name of names) {
    const stores = await plugins[name].onlyStores?.(context);
    if (stores) shown[name] = stores;
  }
  return shown;
}
