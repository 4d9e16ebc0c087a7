/**
 * Keep message bodies as the exact bytes that were published.
 *
 * rabbitmq-client 5.x JSON-parses bodies whose content_type is
 * application/json and turns text/plain into a string (replacing invalid UTF-8
 * silently). We need the raw bytes: to enforce the size limit on what was really
 * sent, to reject non-UTF-8 input instead of mangling it, and to put the body in
 * the DLQ byte-for-byte intact. The library decodes only when a message has no
 * content_encoding, so while a body is assembled we mark the header with a
 * sentinel encoding (decoding skipped) and restore the real value on delivery
 * ({@link originalContentEncoding}). The broker never sees the sentinel: it only
 * touches our in-memory copy of incoming header fields.
 *
 * This reaches into one internal method (`Channel#_onBody`) of the version
 * pinned in deno.json; tests/broker_test.ts proves the DLQ body is
 * byte-identical, so an upgrade that breaks this fails loudly.
 */
import * as channelModule from "rabbitmq-client/lib/Channel.js";

const SENTINEL = "x-marketplace-sync-raw";

interface HeaderFields {
  contentEncoding?: string;
}
interface IncomingState {
  headerFrame?: { fields: HeaderFields };
}
interface ChannelInternals {
  _state: { incoming?: IncomingState };
  _onBody(frame: unknown): void;
}

let installed = false;

/** Installs the raw-body behaviour once per process. Idempotent. */
export function keepRawBodies(): void {
  if (installed) return;
  // deno-lint-ignore no-explicit-any
  const Channel = (channelModule as any).Channel ?? (channelModule as any).default?.Channel;
  const proto = Channel?.prototype as ChannelInternals | undefined;
  if (!proto || typeof proto._onBody !== "function") {
    throw new Error("rabbitmq-client internals changed: Channel#_onBody not found (see raw_body.ts)");
  }
  const original = proto._onBody;
  proto._onBody = function (this: ChannelInternals, frame: unknown) {
    const fields = this._state.incoming?.headerFrame?.fields;
    if (fields && !fields.contentEncoding) fields.contentEncoding = SENTINEL;
    return original.call(this, frame);
  };
  installed = true;
}

/** The content_encoding the publisher really set (undefined if none). */
export function originalContentEncoding(value: string | undefined): string | undefined {
  return value === SENTINEL ? undefined : value;
}
