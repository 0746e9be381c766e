/**
 * Inbound frames → messages: parse, check, and unpack `batch` (sans-I/O).
 */

import { InvalidFrame } from "./errors.js";
import type { ServerEvent, ServerMessage } from "./generated/index.js";

/** Checks one parsed frame against the spec; returns its problems (none when valid). */
export type FrameValidator = (frame: unknown) => readonly string[];

/**
 * The messages of one text frame, in order: a `batch` frame's `messages`, or the frame.
 * Throws `InvalidFrame` for text that is not a JSON object with a string `type`, or (with
 * a validator) for a frame that breaks the spec's `ServerMessage`.
 */
export function decodeFrame(text: string, validator?: FrameValidator): ServerEvent[] {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    throw new InvalidFrame("the server sent a frame that is not JSON", text);
  }
  if (typeof frame !== "object" || frame === null || typeof (frame as { type?: unknown }).type !== "string") {
    throw new InvalidFrame("the server sent a frame that is not a message object", frame);
  }
  if (validator !== undefined) {
    const errors = validator(frame);
    if (errors.length > 0) {
      throw new InvalidFrame(`the server sent a frame that breaks the spec: ${errors.join("; ")}`, frame, errors);
    }
  }
  const message = frame as ServerMessage;
  return message.type === "batch" ? [...message.messages] : [message];
}
