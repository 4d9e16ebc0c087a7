/**
 * Acknowledgements for one AMQP channel, sent in as few frames as possible.
 *
 * Custody settles deliveries in batches (hundreds under load) that arrived together. Acking
 * each on its own costs RabbitMQ one frame and one queue-process round per
 * message (about half of its CPU at custody rates, docs/BENCHMARKS.md), so
 * settled deliveries are acked with `multiple` up to the first one that is not
 * settled yet. Deliveries settle out of order (a retry publish, a slow batch),
 * so a `multiple` ack never covers a delivery still being handled; settled
 * ones held behind a slow one are acked one by one once too many wait.
 */

/** How a delivery ends on its channel. */
export type Settlement = "ack" | "requeue";

/** The channel operations the acks are sent with (rabbitmq-client's `Channel`). */
export interface AckSink {
  readonly active: boolean;
  basicAck(params: { deliveryTag: number; multiple?: boolean }): void;
  basicNack(params: { deliveryTag: number; requeue?: boolean; multiple?: boolean }): void;
}

/** Tracks the deliveries of one channel and acks them in batches. */
export class DeliveryAcks {
  /** Delivery tags in arrival order; `#head` is the oldest one not yet acked. */
  #order: number[] = [];
  #head = 0;
  /** Settled but not sent yet (held behind an unsettled delivery). */
  #settled = new Map<number, Settlement>();
  /** Sent one by one while an older delivery was still unsettled. */
  #sentAlone = new Set<number>();
  #scheduled = false;

  /**
   * @param sink the channel the deliveries came from
   * @param maxHeld once this many settled deliveries wait behind an unsettled
   *   one, they are acked individually (keeps the prefetch window moving)
   * @param onFrame called for every frame sent (how well acks were batched)
   */
  constructor(
    private readonly sink: AckSink,
    private readonly maxHeld: number,
    private readonly onFrame: () => void = () => {},
  ) {}

  /** Registers a delivery as it arrives (tags increase on a channel). */
  track(deliveryTag: number): void {
    this.#order.push(deliveryTag);
  }

  /**
   * Records how a delivery ended. The frames go out on the next macrotask, so
   * every delivery a custody batch settles in this turn shares one ack.
   */
  settle(deliveryTag: number, settlement: Settlement): void {
    this.#settled.set(deliveryTag, settlement);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setTimeout(() => {
      this.#scheduled = false;
      this.flush();
    }, 0);
  }

  /** Deliveries tracked and not acked or nacked yet. */
  get outstanding(): number {
    return this.#order.length - this.#head - this.#sentAlone.size;
  }

  /**
   * Sends what can be sent now. `force` also sends, one by one, settled
   * deliveries that wait behind an unsettled one (at shutdown: the unsettled
   * ones are returned to the queue when the channel closes).
   */
  flush(force = false): void {
    if (!this.sink.active) {
      // The channel is gone: its deliveries go back to the queue on their own,
      // and an ack on a new channel would name someone else's delivery.
      this.#settled.clear();
      return;
    }
    let runEnd = -1;
    while (this.#head < this.#order.length) {
      const tag = this.#order[this.#head];
      if (this.#sentAlone.delete(tag)) {
        this.#head++;
        continue;
      }
      const settlement = this.#settled.get(tag);
      if (settlement === undefined) break;
      this.#settled.delete(tag);
      this.#head++;
      if (settlement === "ack") {
        runEnd = tag;
      } else {
        runEnd = this.#sendRun(runEnd);
        this.#send(() => this.sink.basicNack({ deliveryTag: tag, requeue: true }));
      }
    }
    this.#sendRun(runEnd);
    if (force || this.#settled.size >= this.maxHeld) {
      for (const [tag, settlement] of this.#settled) {
        this.#send(() =>
          settlement === "ack"
            ? this.sink.basicAck({ deliveryTag: tag })
            : this.sink.basicNack({ deliveryTag: tag, requeue: true })
        );
        this.#sentAlone.add(tag);
      }
      this.#settled.clear();
    }
    if (this.#head > 4096) {
      this.#order = this.#order.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Acks every delivery up to `tag` in one frame; returns the new (empty) run. */
  #sendRun(tag: number): number {
    if (tag >= 0) this.#send(() => this.sink.basicAck({ deliveryTag: tag, multiple: true }));
    return -1;
  }

  #send(frame: () => void): void {
    try {
      frame();
      this.onFrame();
    } catch {
      // The channel closed under us: the broker redelivers what was not acked.
    }
  }
}
