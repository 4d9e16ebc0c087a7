/** The confirming publisher never reports an unroutable message as delivered. */
import assert from "node:assert/strict";
import { Connection } from "rabbitmq-client";
import { createConfirmingPublisher } from "../src/broker/publisher.ts";
import { topologyFromConfig } from "../src/broker/topology.ts";
import { integration, RABBITMQ_URL, testConfig, uniqueName } from "./helpers.ts";

integration(
  "a message to a queue that does not exist is an error, every time, not a silent drop",
  async () => {
    const connection = new Connection(RABBITMQ_URL);
    const publisher = createConfirmingPublisher(connection, topologyFromConfig(testConfig()));
    try {
      for (let i = 0; i < 20; i++) {
        await assert.rejects(
          publisher.toQueue(uniqueName("no_such_queue"), { contentType: "application/json" }, "{}"),
          /does not exist; message returned unroutable/,
          `attempt ${i}`,
        );
      }
    } finally {
      await publisher.close();
      await connection.close();
    }
  },
);
