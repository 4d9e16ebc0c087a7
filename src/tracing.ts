/**
 * Tracing through `@opentelemetry/api`. With `OTEL_DENO=true` Deno registers
 * its built-in OTLP exporter as the global tracer provider, so these spans go
 * out with Deno's own (Deno.serve, fetch) and those nest under ours. Without
 * it the API's default no-op tracer makes every call here nearly free.
 * See docs/TRACING.md.
 */
import { type Attributes, type Span, SpanStatusCode, trace } from "@opentelemetry/api";
import { VERSION } from "./version.ts";

export type { Attributes, Span };

/** The service's tracer (instrumentation scope "marketplace-sync"). */
export const tracer = trace.getTracer("marketplace-sync", VERSION);

/**
 * Runs `fn` inside an active span named `name`: spans started meanwhile (ours,
 * Deno's fetch and HTTP-server spans) become its children. A throw is recorded
 * on the span, which gets ERROR status, and is rethrown; the span always ends.
 */
export function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      markError(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/** Records `error` on `span` and sets ERROR status (for failures that are handled, not thrown). */
export function markError(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error);
  else span.recordException(String(error));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}
