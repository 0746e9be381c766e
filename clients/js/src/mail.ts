/**
 * The offline mailbox as this client knows it (sans-I/O). The server keeps `mail` for a
 * user (with auth on, the token's `sub`; without, the client id) until `ack_mail
 * {up_to}`; what is not acknowledged comes again on the next connection. So the client
 * acknowledges only what it handed to the application, and skips the repeats a reconnect
 * brings (the ack was lost with the socket): each mail reaches the application once per
 * client, and the rest still comes when the connection drops mid-delivery.
 */

/** One mailbox (`owner`: a user, or a client id), across connections. */
export class MailboxState {
  /** The highest `mail_seq` received; one at or below it is a repeat and is skipped. */
  seen = 0;
  /** Every mail received up to this `mail_seq` was handed to the application: the next `up_to`. */
  handled = 0;
  /** The server answered `ack_mail` up to here. */
  acked = 0;
  /** The `ack_mail` waiting for its answer (at most one: later ones coalesce). */
  acking: Promise<unknown> | undefined;
  /** Bumped when the server's mailbox turns out to be a new one (`mail_seq` started again). */
  generation = 0;
  /** Received, not yet folded into `handled`, in arrival (= mail_seq) order: seq → handed out. */
  private readonly open = new Map<number, boolean>();

  constructor(readonly owner: string) {}

  /** Take a delivered `mail_seq`: true if it is new, false for a repeat. */
  receive(mailSeq: number): boolean {
    if (mailSeq <= this.acked) {
      // The server removes acknowledged mail for good: a seq it confirmed coming back means
      // its mailbox was recreated (a gateway without Redis restarted), counting from 1.
      this.seen = this.handled = this.acked = 0;
      this.open.clear();
      this.generation++;
    } else if (mailSeq <= this.seen) {
      return false;
    }
    this.seen = mailSeq;
    this.open.set(mailSeq, false);
    return true;
  }

  /** The application has `mailSeq`; `handled` moves over every mail received before it that it has too. */
  handedOut(mailSeq: number, generation: number): void {
    if (generation !== this.generation || !this.open.has(mailSeq)) {
      return;
    }
    this.open.set(mailSeq, true);
    for (const [seq, done] of this.open) {
      if (!done) {
        return;
      }
      this.open.delete(seq);
      this.handled = Math.max(this.handled, seq);
    }
  }

  /** Mail was handled that the server was not told of, and no `ack_mail` is on the wire. */
  get ackDue(): boolean {
    return this.acking === undefined && this.handled > this.acked;
  }
}
