/**
 * The audit trail (`GET /changes`): every stock change with its event, delta,
 * attempts, outcome, the marketplace's resulting quantity and error, newest
 * first, keyset-paginated by a cursor so paging is stable while sales arrive.
 */
import type { Sql } from "postgres";
import { z } from "zod";

const STATUSES = ["pending", "sending", "applied", "failed"] as const;

/** Query parameters of `GET /changes`, validated (a bad one is a 400 naming it). */
export const changesQuerySchema = z.object({
  status: z.enum(STATUSES).optional(),
  channel: z.string().min(1).max(50).optional(),
  sku: z.string().min(1).max(500).optional(),
  tienda_id: z.string().min(1).max(200).optional(),
  event_id: z.string().min(1).max(500).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  cursor: z.string().regex(/^\d+$/, "must be the next_cursor of a previous page").optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
}).strict();

/** Filters of the audit trail. */
export type ChangesQuery = z.infer<typeof changesQuerySchema>;

/** One change as the audit trail shows it. */
export interface ChangeRecord {
  id: string;
  event_id: string;
  channel: string;
  tienda_id: string;
  sku: string;
  producto_id: string | null;
  delta: number;
  status: string;
  attempts: number;
  outcome: string | null;
  quantity_after: number | null;
  /** MercadoLibre mirror: the absolute value sent. */
  target: number | null;
  result: unknown;
  error_reason: string | null;
  error: string | null;
  batch_id: string | null;
  created_at: string;
  updated_at: string;
  applied_at: string | null;
  next_attempt_at: string | null;
}

/** Reads one page of the audit trail, newest first. */
export async function listChanges(
  sql: Sql,
  q: ChangesQuery,
): Promise<{ changes: ChangeRecord[]; next_cursor: string | null }> {
  // Every change has its sale's row (custody, an order and a resync write it first). A sale lists its
  // changes (migration 16): found by primary key. A sale stored before, and a resync's writes, do not:
  // their changes are found by event id, scanning newest first. An unknown event id has none.
  const [sale] = q.event_id
    ? await sql<{ change_ids: string[] | null }[]>`
        select change_ids::text[] from sale where event_id = ${q.event_id}`
    : [];
  const byEvent = !q.event_id
    ? sql``
    : !sale
    ? sql`and false`
    : sale.change_ids
    ? sql`and id = any(${sale.change_ids}::bigint[]) and event_id = ${q.event_id}`
    : sql`and event_id = ${q.event_id}`;
  const rows = await sql<
    (
      & Omit<
        ChangeRecord,
        | "outcome"
        | "quantity_after"
        | "target"
        | "created_at"
        | "updated_at"
        | "applied_at"
        | "next_attempt_at"
      >
      & {
        created_at: Date;
        updated_at: Date;
        applied_at: Date | null;
        next_attempt_at: Date;
        result: { quantity_after?: number | null; detail?: { sent?: number } | null } | null;
      }
    )[]
  >`
    select id::text, event_id, channel, tienda_id, sku, producto_id, delta, status, attempts, result,
           error_reason, error, batch_id::text, created_at, updated_at, applied_at, next_attempt_at
      from stock_change
     where true
       ${q.status ? sql`and status = ${q.status}` : sql``}
       ${q.channel ? sql`and channel = ${q.channel}` : sql``}
       ${q.sku ? sql`and sku = ${q.sku}` : sql``}
       ${q.tienda_id ? sql`and tienda_id = ${q.tienda_id}` : sql``}
       ${byEvent}
       ${q.since ? sql`and created_at >= ${new Date(q.since)}` : sql``}
       ${q.cursor ? sql`and id < ${q.cursor}` : sql``}
     order by id desc
     limit ${q.limit + 1}`;
  const page = rows.slice(0, q.limit);
  const changes = page.map((r) => ({
    ...r,
    outcome: r.status === "applied" ? "applied" : r.status === "failed" ? (r.error_reason ?? "failed") : null,
    quantity_after: r.result?.quantity_after ?? null,
    target: typeof r.result?.detail?.sent === "number" ? r.result.detail.sent : null,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
    applied_at: r.applied_at?.toISOString() ?? null,
    next_attempt_at: r.status === "pending" ? r.next_attempt_at.toISOString() : null,
  }));
  return { changes, next_cursor: rows.length > q.limit ? page[page.length - 1].id : null };
}
