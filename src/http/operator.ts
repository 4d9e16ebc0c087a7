/**
 * Operator routes (docs/DESIGN.md §7), behind {@link adminAuth}: status, audit
 * trail, resync, dead letters. The status page at `/` is open: it holds no
 * data and reads `/status` with the operator's token.
 */
import type { Context, Hono } from "hono";
import { z } from "zod";
import { changesQuerySchema, type listChanges } from "../ops/changes.ts";
import {
  DeadLetterReplayError,
  DeadLetterValidationError,
  dlqListQuerySchema,
  replayRequestSchema,
} from "../ops/dead_letters.ts";
import { type Resyncer, resyncRequestSchema } from "../ops/resync.ts";
import { reportStream } from "../ops/resync_report.ts";
import { adminAuth, type AdminAuthOptions } from "./admin_auth.ts";

/** DLQ inspection and replay, as the routes use them. */
export interface DeadLetterOps {
  list(limit: number): Promise<unknown>;
  replay(filter: { all?: boolean; eventIds?: string[]; reason?: string }): Promise<unknown>;
}

/** What the operator routes need; getters, because parts exist only once start-up finished. */
export interface OperatorDeps {
  auth: AdminAuthOptions;
  status(): Promise<unknown>;
  changes(query: Parameters<typeof listChanges>[1]): ReturnType<typeof listChanges>;
  resyncer(): Resyncer | undefined;
  deadLetters(): DeadLetterOps | undefined;
  statusPage(): string;
}

function invalid(c: Context, error: z.ZodError) {
  return c.json({
    error: "invalid_request",
    message: error.issues.map((i) => `${i.path.length ? i.path.join(".") + ": " : ""}${i.message}`).join(
      "; ",
    ),
    issues: error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
  }, 400);
}

async function jsonBody(c: Context): Promise<unknown | Response> {
  try {
    const text = await c.req.text();
    return text.trim() === "" ? {} : JSON.parse(text);
  } catch {
    return c.json({ error: "invalid_request", message: "the body is not JSON" }, 400);
  }
}

function starting(c: Context, what: string) {
  return c.json(
    { error: "starting", message: `${what} is not available yet: the service is still starting` },
    503,
  );
}

/** Mounts the operator routes and the status page on `app`. */
export function mountOperatorRoutes(app: Hono, deps: OperatorDeps): void {
  app.get("/", (c) => c.html(deps.statusPage()));

  const guard = adminAuth(deps.auth);
  for (const path of ["/status", "/changes", "/resync", "/resync/*", "/dlq", "/dlq/*"]) app.use(path, guard);

  app.get("/status", async (c) => c.json(await deps.status()));

  app.get("/changes", async (c) => {
    const parsed = changesQuerySchema.safeParse(c.req.query());
    if (!parsed.success) return invalid(c, parsed.error);
    return c.json(await deps.changes(parsed.data));
  });

  app.post("/resync", async (c) => {
    const body = await jsonBody(c);
    if (body instanceof Response) return body;
    const parsed = resyncRequestSchema.safeParse(body);
    if (!parsed.success) return invalid(c, parsed.error);
    const resyncer = deps.resyncer();
    if (!resyncer) return starting(c, "resync");
    const started = await resyncer.start(parsed.data);
    if ("conflict" in started) {
      return c.json({
        error: "resync_running",
        id: started.conflict,
        message: `a resync of the same scope is running: GET /resync/${started.conflict}`,
      }, 409);
    }
    return c.json({ id: started.id, status_url: `/resync/${started.id}` }, 202);
  });

  app.get("/resync/:id", async (c) => {
    const resyncer = deps.resyncer();
    if (!resyncer) return starting(c, "resync");
    // ?lines=0: progress only, for a client that polls a long job (the lines come from /report).
    const job = await resyncer.get(c.req.param("id"), c.req.query("lines") !== "0");
    return job ? c.json(job) : c.json({ error: "not_found", message: `no resync ${c.req.param("id")}` }, 404);
  });

  app.delete("/resync/:id", async (c) => {
    const resyncer = deps.resyncer();
    if (!resyncer) return starting(c, "resync");
    const id = c.req.param("id");
    const result = await resyncer.cancel(id);
    if (result === "not_found") return c.json({ error: "not_found", message: `no resync ${id}` }, 404);
    if (result === "finished") {
      return c.json({
        error: "resync_finished",
        message: `resync ${id} has already ended: nothing to cancel`,
      }, 409);
    }
    return c.json({ id, state: "cancelled", status_url: `/resync/${id}` });
  });

  app.get("/resync/:id/report", async (c) => {
    const format = c.req.query("format") ?? "csv";
    if (format !== "csv" && format !== "ndjson") {
      return c.json({ error: "invalid_request", message: `format: "csv" or "ndjson", not "${format}"` }, 400);
    }
    const resyncer = deps.resyncer();
    if (!resyncer) return starting(c, "resync");
    const id = c.req.param("id");
    if (!await resyncer.get(id)) return c.json({ error: "not_found", message: `no resync ${id}` }, 404);
    return c.body(reportStream(format, (kind) => resyncer.lines(id, kind)), 200, {
      "content-type": format === "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson",
      "content-disposition": `attachment; filename="resync-${id}.${format === "csv" ? "csv" : "ndjson"}"`,
    });
  });

  app.get("/dlq", async (c) => {
    const query = dlqListQuerySchema.safeParse(c.req.query());
    if (!query.success) return invalid(c, query.error);
    const dlq = deps.deadLetters();
    if (!dlq) return starting(c, "the DLQ");
    return c.json(await dlq.list(query.data.limit));
  });

  app.post("/dlq/replay", async (c) => {
    const body = await jsonBody(c);
    if (body instanceof Response) return body;
    const parsed = replayRequestSchema.safeParse(body);
    if (!parsed.success) return invalid(c, parsed.error);
    const dlq = deps.deadLetters();
    if (!dlq) return starting(c, "the DLQ");
    try {
      return c.json(
        await dlq.replay(parsed.data),
      );
    } catch (error) {
      if (error instanceof DeadLetterValidationError) {
        return c.json({ error: "invalid_request", message: error.message }, 400);
      }
      if (error instanceof DeadLetterReplayError) {
        // Partly done: say exactly how far it got; the rest is still in the DLQ, in order.
        return c.json({
          error: "replay_interrupted",
          message: error.message,
          moved: error.moved,
          moved_event_ids: error.movedEventIds,
        }, 502);
      }
      throw error;
    }
  });
}
