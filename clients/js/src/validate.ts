/**
 * Run-time validation of inbound frames against the spec's `ServerMessage`, with ajv.
 * Loaded only when the client's `validate` option is on, so bundles without it stay small.
 */

import { Ajv } from "ajv";

import type { FrameValidator } from "./frames.js";
import { SCHEMA_FORMATS, SERVER_MESSAGE_SCHEMA } from "./generated/index.js";

// RFC 3339 date-time, as the gateway writes it (`2026-11-25T12:00:00.000000+00:00`).
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$/;
const FORMATS: Readonly<Record<string, RegExp>> = { "date-time": DATE_TIME };

/** A validator for every frame the server may send, compiled once. */
export function createValidator(): FrameValidator {
  const ajv = new Ajv({ discriminator: true, strict: true, allErrors: false });
  for (const format of SCHEMA_FORMATS) {
    const pattern = FORMATS[format];
    if (pattern === undefined) {
      throw new Error(`the spec uses the format ${format}, which the validator does not know`);
    }
    ajv.addFormat(format, pattern);
  }
  const validate = ajv.compile(SERVER_MESSAGE_SCHEMA);
  return (frame) => {
    if (validate(frame)) {
      return [];
    }
    return (validate.errors ?? []).map((error) => `${error.instancePath || "/"} ${error.message ?? "is invalid"}`);
  };
}
