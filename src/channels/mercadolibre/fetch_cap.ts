/**
 * How many order fetches MercadoLibre's notifications may cause per minute, across replicas.
 * Notifications carry no signature: anyone can POST one, and each makes us spend a request of
 * the seller's rate budget (the one stock writes need). Past the cap a notification is kept
 * (custody) but not fetched: the deliveries sweep or the catch-up poll picks it up later. A fixed
 * window per minute in Redis (its clock, so replicas agree); a local window when Redis is away.
 */
import type { ScriptRunner } from "../../sync/cost_bucket.ts";

// KEYS[1]: the key prefix. Counts one fetch in the current minute; returns the count so far.
const COUNT = `
local t = redis.call('TIME')
local key = KEYS[1] .. ':' .. math.floor(tonumber(t[1]) / 60)
local n = redis.call('INCR', key)
if n == 1 then redis.call('PEXPIRE', key, 120000) end
return n
`;

/** The per-minute cap of notification-caused fetches. */
export class FetchCap {
  #local = { minute: -1, count: 0 };

  constructor(
    private readonly redis: ScriptRunner,
    private readonly key: string,
    readonly perMinute: number,
  ) {}

  /** Takes one fetch of this minute's allowance; false when the cap is reached. */
  async tryTake(): Promise<boolean> {
    if (this.redis.isReady) {
      try {
        return Number(await this.redis.eval(COUNT, { keys: [this.key], arguments: [] })) <= this.perMinute;
      } catch {
        // Redis went away mid-call: this replica counts alone (the cap then holds per replica).
      }
    }
    const minute = Math.floor(Date.now() / 60_000);
    if (minute !== this.#local.minute) this.#local = { minute, count: 0 };
    return ++this.#local.count <= this.perMinute;
  }
}
