/**
 * An inbound route's request body, read only up to a limit: a marketplace's webhook routes take POSTs from
 * anyone, and a chunked body carries no Content-Length to refuse before reading, so the reading itself
 * stops at the limit (and cancels the rest) rather than holding whatever a sender keeps sending.
 */

/** The body's bytes, or undefined once it passes `limit` bytes (the rest is not read). */
export async function readCapped(request: Request, limit: number): Promise<Uint8Array | undefined> {
  if (!request.body) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}
