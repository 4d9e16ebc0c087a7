/**
 * The HTTP listener: started before anything else so `/healthz` and `/readyz` answer
 * while dependencies are still coming up.
 */
import type { Config } from "../config.ts";
import { logger } from "../log.ts";
import { VERSION } from "../version.ts";

const log = logger("main");

/** A listening server and the base URL it answers on. */
export interface Listening {
  /** e.g. http://127.0.0.1:8080 (a wildcard address is given as loopback). */
  url: string;
  shutdown(): Promise<void>;
}

/** Serves `fetch` on HTTP_HOST:HTTP_PORT. */
export function listen(config: Config, fetch: (request: Request) => Response | Promise<Response>): Listening {
  const server = Deno.serve(
    { hostname: config.HTTP_HOST, port: config.HTTP_PORT, onListen: () => {} },
    fetch,
  );
  const address = server.addr as Deno.NetAddr;
  const host = address.hostname === "0.0.0.0" ? "127.0.0.1" : address.hostname;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`;
  log.info("marketplace-sync {version} listening on {url}", { mark: "start", version: VERSION, url });
  return { url, shutdown: () => server.shutdown() };
}
