/**
 * The Shopify sandbox's webhook deliveries, as Shopify makes them
 * (shopify.dev/docs/apps/build/webhooks/delivery-structure): an HTTP POST of the topic's
 * JSON payload to every subscribed URI, with `X-Shopify-Topic`, `X-Shopify-Hmac-Sha256`
 * (base64 HMAC-SHA256 of the raw body with the app's client secret), `X-Shopify-Shop-Domain`,
 * `X-Shopify-API-Version`, `X-Shopify-Webhook-Id` (one per delivery, the same on its retries),
 * `X-Shopify-Event-Id` (shared by every delivery of one merchant action) and
 * `X-Shopify-Triggered-At`. A delivery that is not answered 2xx within 5 s is retried
 * (Shopify: 8 times over 4 hours; here a few times, seconds apart, so tests see it).
 */
import { logger } from "../../log.ts";

const log = logger("sandbox");

/** How long Shopify waits for an answer. */
export const WEBHOOK_TIMEOUT_MS = 5_000;

/** A subscription: a topic delivered to a URI. */
export interface WebhookSubscription {
  id: string;
  topic: string;
  uri: string;
}

/** One delivery and how it went. */
export interface WebhookDelivery {
  webhookId: string;
  eventId: string;
  topic: string;
  uri: string;
  triggeredAt: string;
  body: string;
  attempts: number;
  /** HTTP status of the last attempt (0: no answer). */
  lastStatus: number;
  state: "pending" | "delivered" | "failed" | "dropped";
}

/** Options of {@link WebhookDeliveries}. */
export interface WebhookOptions {
  /** The app's client secret, which signs every delivery. */
  secret: string;
  shopDomain: string;
  apiVersion: string;
  /** Pauses before each retry, in ms; its length is how many retries there are. */
  retryDelaysMs?: number[];
  /** Whether this delivery is lost on its way (fault injection): never sent, never retried. */
  drop?: () => boolean;
  now?: () => number;
}

async function sign(secret: string, body: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(body)));
  return btoa(String.fromCharCode(...mac));
}

/** The shop's webhook subscriptions and the deliveries made to them. */
export class WebhookDeliveries {
  #subscriptions: WebhookSubscription[] = [];
  #deliveries: WebhookDelivery[] = [];
  #inFlight = new Set<Promise<void>>();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #closed = false;
  readonly #now: () => number;

  constructor(readonly options: WebhookOptions) {
    this.#now = options.now ?? Date.now;
  }

  /** Subscribes `uri` to `topic` (an existing identical subscription is returned as is). */
  subscribe(topic: string, uri: string): WebhookSubscription {
    const existing = this.#subscriptions.find((s) => s.topic === topic && s.uri === uri);
    if (existing) return existing;
    const subscription = { id: `gid://shopify/WebhookSubscription/${crypto.randomUUID()}`, topic, uri };
    this.#subscriptions.push(subscription);
    return subscription;
  }

  get subscriptions(): readonly WebhookSubscription[] {
    return this.#subscriptions;
  }

  /** Every delivery so far, oldest first. */
  deliveries(): WebhookDelivery[] {
    return this.#deliveries.map((d) => ({ ...d }));
  }

  /**
   * Delivers one merchant action's webhooks to every subscription of each topic: one event id
   * for the action, one webhook id per delivery.
   */
  emit(webhooks: { topic: string; payload: unknown }[]): WebhookDelivery[] {
    const eventId = crypto.randomUUID();
    const triggeredAt = new Date(this.#now()).toISOString();
    const made: WebhookDelivery[] = [];
    for (const { topic, payload } of webhooks) {
      const body = JSON.stringify(payload);
      for (const s of this.#subscriptions.filter((x) => x.topic === topic)) {
        const delivery: WebhookDelivery = {
          webhookId: crypto.randomUUID(),
          eventId,
          topic,
          uri: s.uri,
          triggeredAt,
          body,
          attempts: 0,
          lastStatus: 0,
          state: "pending",
        };
        this.#deliveries.push(delivery);
        made.push(delivery);
        if (this.options.drop?.()) {
          delivery.state = "dropped";
          continue;
        }
        this.#track(this.#deliver(delivery, 0));
      }
    }
    return made;
  }

  /** Sends a delivery again, with the same ids (what Shopify does on a retry). */
  redeliver(webhookId: string): WebhookDelivery | undefined {
    const delivery = this.#deliveries.find((d) => d.webhookId === webhookId);
    if (delivery) this.#track(this.#send(delivery).then(() => {}));
    return delivery && { ...delivery };
  }

  /** Resolves once no delivery is under way (retries included). */
  async idle(): Promise<void> {
    while (this.#inFlight.size) await Promise.allSettled([...this.#inFlight]);
  }

  /** Stops retrying; waits for attempts under way. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await Promise.allSettled([...this.#inFlight]);
  }

  #track(work: Promise<void>): void {
    this.#inFlight.add(work);
    work.finally(() => this.#inFlight.delete(work));
  }

  async #deliver(delivery: WebhookDelivery, retry: number): Promise<void> {
    if (this.#closed) return;
    if (await this.#send(delivery)) {
      delivery.state = "delivered";
      return;
    }
    const delays = this.options.retryDelaysMs ?? [200, 1_000, 3_000];
    if (retry >= delays.length || this.#closed) {
      delivery.state = "failed";
      log.warning("Shopify sandbox gave up delivering {topic} to {uri} after {attempts} attempts", {
        topic: delivery.topic,
        uri: delivery.uri,
        attempts: delivery.attempts,
      });
      return;
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.#timers.delete(t);
        resolve();
      }, delays[retry]);
      this.#timers.add(t);
    });
    await this.#deliver(delivery, retry + 1);
  }

  async #send(delivery: WebhookDelivery): Promise<boolean> {
    delivery.attempts++;
    try {
      const response = await fetch(delivery.uri, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-shopify-topic": delivery.topic,
          "x-shopify-hmac-sha256": await sign(this.options.secret, delivery.body),
          "x-shopify-shop-domain": this.options.shopDomain,
          "x-shopify-api-version": this.options.apiVersion,
          "x-shopify-webhook-id": delivery.webhookId,
          "x-shopify-event-id": delivery.eventId,
          "x-shopify-triggered-at": delivery.triggeredAt,
        },
        body: delivery.body,
        signal: AbortSignal.timeout(WEBHOOK_TIMEOUT_MS),
      });
      await response.body?.cancel();
      delivery.lastStatus = response.status;
      return response.ok;
    } catch {
      delivery.lastStatus = 0;
      return false;
    }
  }
}
