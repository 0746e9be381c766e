// A user's mistake that must not compile: `data` of `data_processing` is an array of numbers.
// The type test runs tsc on this file and expects error TS2322 on the line below.
import { GraphwireClient } from "@graphwire/client";

const client = new GraphwireClient("ws://127.0.0.1:8000/ws/workflow");
await client.connect();
await client.startWorkflow("data_processing", { data: "x" });
