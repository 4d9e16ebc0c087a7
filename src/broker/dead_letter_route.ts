/**
 * The dispatcher's failure route in the service: a confirmed publish of the failed
 * change's sale to OUR DLQ, in the envelope every dead letter shares (envelope.ts).
 */
import type { FailedChange } from "../model/batch.ts";
import type { FailureRoute } from "../sync/failure_route.ts";
import { failedChangeEnvelope } from "./envelope.ts";
import type { ConfirmingPublisher } from "./publisher.ts";
import type { Topology } from "./topology.ts";

/** Dead-letters failed changes into `topology`'s DLQ through `publisher` (confirmed). */
export function deadLetterRoute(
  publisher: ConfirmingPublisher,
  topology: Pick<Topology, "deadLetterQueue">,
): FailureRoute {
  return {
    async deadLetter(failed: FailedChange): Promise<void> {
      const envelope = failedChangeEnvelope(failed);
      // Bytes, not a string: rabbitmq-client labels a string body text/plain over the envelope's JSON.
      const body = new TextEncoder().encode(JSON.stringify(failed.body));
      await publisher.toQueue(topology.deadLetterQueue, envelope, body);
    },
  };
}
