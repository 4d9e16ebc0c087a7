/**
 * Service variables shared by the tests, the bench and the chaos suite: a run of its
 * own on shared servers, and the MercadoLibre channel pointed at a sandbox as if it
 * were the real API.
 */

/** The servers a run uses. */
export interface Servers {
  RABBITMQ_URL: string;
  DATABASE_URL: string;
  REDIS_URL: string;
}

/**
 * Variables for a service that only touches names of its own (`id`): its exchange, work
 * queue and ledger schema, with HTTP on a free loopback port.
 */
export function isolatedServiceEnv(servers: Servers, id: string): Record<string, string> {
  return {
    RABBITMQ_URL: servers.RABBITMQ_URL,
    DATABASE_URL: servers.DATABASE_URL,
    REDIS_URL: servers.REDIS_URL,
    HTTP_HOST: "127.0.0.1",
    HTTP_PORT: "0",
    EXCHANGE: `blend_events.${id}`,
    QUEUE: `marketplace-sync.${id}`,
    LEDGER_SCHEMA: `msync_${id}`,
  };
}

/** What {@link meliAsRealApi} needs of a MercadoLibre sandbox. */
export interface MeliOAuthSandbox {
  url: string;
  clientId: string;
  clientSecret: string;
  currentRefreshToken(): string;
}

/**
 * Variables that make the service dispatch MercadoLibre only, to `sandbox` through its
 * OAuth refresh chain exactly as to the real API, mirroring store `tiendaId`.
 */
export function meliAsRealApi(sandbox: MeliOAuthSandbox, tiendaId: string): Record<string, string> {
  return {
    CHANNELS: "mercadolibre",
    DISPATCH_ENABLED: "true",
    MELI_URL: sandbox.url,
    MELI_CLIENT_ID: sandbox.clientId,
    MELI_CLIENT_SECRET: sandbox.clientSecret,
    MELI_REFRESH_TOKEN: sandbox.currentRefreshToken(),
    MELI_TIENDA_ID: tiendaId,
  };
}
