/**
 * Notifications of the MercadoLibre sandbox, as MeLi's "Recibe notificaciones" page describes
 * them: a change of a resource is POSTed to the app's callback URL as
 * `{_id, resource, user_id, topic, application_id, attempts, sent, received}`, with no signature
 * (the receiver must fetch the resource to learn what changed). The app must answer 200 quickly
 * (MeLi waits 500 ms); otherwise the same notification (same `_id`, `attempts` + 1) is sent again
 * later, and after the last attempt it is dropped — the sandbox retries a few times, sooner than
 * MeLi's hour, so tests see it.
 */
import { logger } from "../../log.ts";

const log = logger("sandbox");

/** A notification as MeLi POSTs it. */
export interface MeliNotification {
  _id: string;
  resource: string;
  user_id: number;
  topic: string;
  /** The app's id: digits, kept as text here (a 16-digit id does not fit a JS number). */
  application_id: string;
  attempts: number;
  sent: string;
  received: string;
}

/** One delivery attempt, for tests: what was sent and how the callback answered. */
export interface NotificationAttempt {
  notification: MeliNotification;
  /** HTTP status, or undefined when no answer came in time. */
  status?: number;
  error?: string;
}

/** Options of {@link MeliNotifier}. */
export interface NotifierOptions {
  userId: number;
  applicationId: string;
  /** How long the callback may take to answer (MeLi: 500 ms). */
  timeoutMs?: number;
  /** Pauses before each re-send (default 1 s, 3 s, 9 s). */
  retryDelaysMs?: number[];
}

/** Sends notifications to the app's callback URL, with MeLi's re-sends. */
export class MeliNotifier {
  /** The app's callback URL; undefined: notifications are not sent (no app configured one). */
  callbackUrl: string | undefined;
  /** While true, notifications are dropped (MeLi never sending one): only a search finds the change. */
  paused = false;
  readonly #attempts: NotificationAttempt[] = [];
  readonly #inFlight = new Set<Promise<void>>();
  readonly #closing = new AbortController();

  constructor(private readonly options: NotifierOptions) {}

  /** Every delivery attempt so far, oldest first. */
  attempts(): NotificationAttempt[] {
    return this.#attempts.map((a) => structuredClone(a));
  }

  /** Notifies a change of `resource` (e.g. `/orders/123`) on `topic`, in the background. */
  notify(topic: string, resource: string): MeliNotification | undefined {
    if (!this.callbackUrl || this.paused) return undefined;
    const now = new Date().toISOString();
    const notification: MeliNotification = {
      _id: crypto.randomUUID(),
      resource,
      user_id: this.options.userId,
      topic,
      application_id: this.options.applicationId,
      attempts: 1,
      sent: now,
      received: now,
    };
    const delivery = this.#deliver(this.callbackUrl, notification).finally(() =>
      this.#inFlight.delete(delivery)
    );
    this.#inFlight.add(delivery);
    return notification;
  }

  async #deliver(url: string, first: MeliNotification): Promise<void> {
    const delays = this.options.retryDelaysMs ?? [1_000, 3_000, 9_000];
    for (let attempt = 1; attempt <= delays.length + 1; attempt++) {
      if (this.#closing.signal.aborted) return;
      const notification = { ...first, attempts: attempt, sent: new Date().toISOString() };
      const record: NotificationAttempt = { notification };
      this.#attempts.push(record);
      try {
        const response = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          // application_id as a JSON number, digits verbatim, like MeLi's body.
          body: JSON.stringify({ ...notification, application_id: 0 }).replace(
            '"application_id":0',
            `"application_id":${/^\d+$/.test(notification.application_id) ? notification.application_id : 0}`,
          ),
          signal: AbortSignal.any([
            AbortSignal.timeout(this.options.timeoutMs ?? 500),
            this.#closing.signal,
          ]),
        });
        await response.body?.cancel();
        record.status = response.status;
        if (response.status === 200) return;
      } catch (error) {
        record.error = (error as Error).name === "TimeoutError"
          ? "no answer in time"
          : (error as Error).message;
      }
      if (attempt > delays.length) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delays[attempt - 1]);
        this.#closing.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
    }
    log.warn("MercadoLibre sandbox dropped notification {resource} after its last attempt", {
      resource: first.resource,
    });
  }

  /** Stops re-sends and waits for the deliveries in flight. */
  async close(): Promise<void> {
    this.#closing.abort();
    await Promise.allSettled([...this.#inFlight]);
  }
}
