/** A small typed event emitter: `on(type, handler)` returns the function that removes it. */

type Handler<E> = (event: E) => unknown;

export class Emitter<Events extends object> {
  private readonly handlers = new Map<keyof Events, Set<Handler<never>>>();

  on<K extends keyof Events>(type: K, handler: Handler<Events[K]>): () => void {
    let set = this.handlers.get(type);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(handler);
    return () => this.off(type, handler);
  }

  off<K extends keyof Events>(type: K, handler: Handler<Events[K]>): void {
    this.handlers.get(type)?.delete(handler);
  }

  /** Whether `type` has a handler. */
  listens(type: keyof Events): boolean {
    return (this.handlers.get(type)?.size ?? 0) > 0;
  }

  /**
   * Calls every handler of `type`; a handler that throws does not stop the others or the
   * client. Returns what the handlers returned (their promises, for those that wait).
   */
  emit<K extends keyof Events>(type: K, event: Events[K]): unknown[] {
    const results: unknown[] = [];
    for (const handler of [...(this.handlers.get(type) ?? [])]) {
      try {
        results.push((handler as Handler<Events[K]>)(event));
      } catch (error) {
        // Rethrown outside the client's own stack, where the host reports it.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    return results;
  }
}
