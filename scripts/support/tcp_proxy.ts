/**
 * A loopback TCP proxy the tests and the chaos worlds can cut and restore, to
 * take a dependency away from one service without stopping the shared server
 * other tests and runs use.
 */
export class TcpProxy {
  #listener: Deno.Listener | undefined;
  #conns = new Set<Deno.Conn>();
  port = 0;

  constructor(readonly targetPort: number, readonly targetHost = "127.0.0.1") {}

  /** Starts listening (on the same port as before after a cut). */
  start(): this {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#acceptLoop(this.#listener);
    return this;
  }

  async #acceptLoop(listener: Deno.Listener) {
    try {
      for await (const client of listener) {
        Deno.connect({ hostname: this.targetHost, port: this.targetPort }).then((upstream) => {
          this.#conns.add(client);
          this.#conns.add(upstream);
          const done = () => {
            for (const c of [client, upstream]) {
              this.#conns.delete(c);
              try {
                c.close();
              } catch { /* already closed */ }
            }
          };
          Promise.allSettled([
            client.readable.pipeTo(upstream.writable),
            upstream.readable.pipeTo(client.writable),
          ]).then(done);
        }, () => client.close());
      }
    } catch { /* listener closed */ }
  }

  /** Drops every connection and refuses new ones. */
  cut(): void {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    this.#listener = undefined;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    this.#conns.clear();
  }

  /** Drops every connection but keeps accepting new ones (a network blip). */
  reset(): void {
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    this.#conns.clear();
  }

  /** Accepts connections again on the same port (no-op if not cut). */
  restore(): void {
    if (!this.#listener) this.start();
  }

  /** Stops for good: cuts and does not restore. */
  close(): void {
    this.cut();
  }
}
