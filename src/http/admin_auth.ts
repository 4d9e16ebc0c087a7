/**
 * Bearer authentication for the operator routes (docs/DESIGN.md §7): constant-time
 * comparison with ADMIN_TOKEN; 401 without a token, 403 with a wrong one. With
 * no ADMIN_TOKEN the routes are disabled (403 saying how to enable them),
 * except in sandbox mode for requests from loopback.
 */
import { timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";

/** Options of {@link adminAuth}. */
export interface AdminAuthOptions {
  /** ADMIN_TOKEN; undefined disables the routes (except sandbox + loopback). */
  token: string | undefined;
  /** True when no real marketplace is configured: loopback callers need no token. */
  sandboxMode: boolean;
}

const encoder = new TextEncoder();

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/**
 * Compares two secrets in constant time. Both are hashed first, so neither the
 * length nor the position of the first difference shows in the timing.
 */
export async function tokensMatch(given: string, expected: string): Promise<boolean> {
  return timingSafeEqual(await digest(given), await digest(expected));
}

/** The caller's address as Deno.serve reports it (Hono passes the serve info as `env`). */
function remoteHost(c: Context): string | undefined {
  const env = c.env as { remoteAddr?: { hostname?: string } } | undefined;
  return env?.remoteAddr?.hostname;
}

/** True for 127.0.0.0/8, ::1 and IPv4-mapped loopback. */
export function isLoopback(host: string | undefined): boolean {
  if (!host) return false;
  const h = host.replace(/^\[|\]$/g, "").replace(/^::ffff:/i, "");
  return h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Hono middleware guarding the operator routes. */
export function adminAuth(options: AdminAuthOptions): MiddlewareHandler {
  return async (c, next) => {
    if (!options.token) {
      if (options.sandboxMode && isLoopback(remoteHost(c))) return await next();
      return c.json({
        error: "operator_routes_disabled",
        message: "operator routes are disabled: set ADMIN_TOKEN (at least 16 characters) in the service's " +
          "environment and send it as `Authorization: Bearer <ADMIN_TOKEN>`" +
          (options.sandboxMode ? " (in sandbox mode they are open to loopback callers)" : ""),
      }, 403);
    }
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!match) {
      c.header("WWW-Authenticate", 'Bearer realm="marketplace-sync"');
      return c.json({
        error: "unauthorized",
        message: "this route needs `Authorization: Bearer <ADMIN_TOKEN>`",
      }, 401);
    }
    if (!await tokensMatch(match[1], options.token)) {
      return c.json({ error: "forbidden", message: "the bearer token is not the ADMIN_TOKEN" }, 403);
    }
    await next();
  };
}
